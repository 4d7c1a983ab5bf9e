export * from "./lambda-function.js";
export * from "./logger.js";
export * from "./lambda-function-validation.js";
export * from "./route-table.js";
export * from "./manifest-folder.js";
