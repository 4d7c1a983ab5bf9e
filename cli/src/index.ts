export * from "./invoke-command.js";
export * from "./private-containerd.js";
export * from "./standalone-stack.js";
