// Tests are written in TypeScript beside the code and compiled by `tsc -b`
// (make build); jest runs the compiled ES modules. The global setup starts the
// real test environment (containerd, registry, etcd, kube-apiserver) once per run.
export default {
  testEnvironment: "node",
  testMatch: ["<rootDir>/*/dist/**/*.test.js"],
  testPathIgnorePatterns: ["/node_modules/"],
  globalSetup: "<rootDir>/test/dist/env/global-setup.js",
  globalTeardown: "<rootDir>/test/dist/env/global-teardown.js",
  testTimeout: 120000,
  maxWorkers: 2,
  transform: {},
  verbose: true,
};
