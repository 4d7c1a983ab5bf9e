// jest --filter module for `make test-unit` (CommonJS: jest loads a filter with require()).
// Keeps the test files whose first line carries the `@esb-test unit` marker: tests that need no
// test environment (no containerd, registry, kube-apiserver, Podman, network namespaces or built
// third-party binaries). They run with ESB_TEST_ENV=none, so a marked test that does need the
// environment fails instead of being skipped.
const { openSync, readSync, closeSync } = require("node:fs");

const marker = "@esb-test unit";

function firstLine(path) {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(200);
    const bytesRead = readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString("utf8").split("\n", 1)[0];
  } finally {
    closeSync(fd);
  }
}

/** jest's filter contract: given every test path, return those to run. */
module.exports = async function unitTestFilter(testPaths) {
  return { filtered: testPaths.filter((path) => firstLine(path).includes(marker)) };
};
