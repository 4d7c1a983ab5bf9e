export * from "./lambda-function.js";
export * from "./logger.js";
