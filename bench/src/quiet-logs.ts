// Imported first by main.ts: components log at "error" unless ESB_LOG_LEVEL says otherwise,
// so their per-worker lines do not drown the bench's table.
process.env.ESB_LOG_LEVEL ??= "error";
export {};
