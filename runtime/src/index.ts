export * from "./worker-files.js";
export * from "./image/runtime-image-builder.js";
export * from "./image/runtime-image-store.js";
export * from "./image/oci-image-writer.js";
export * from "./image/registry-client.js";
