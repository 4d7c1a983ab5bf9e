/** Name of the function every chaos call goes to (namespace `default`). */
export const CHAOS_FUNCTION = "chaos-echo";
/** Its HTTP route. */
export const CHAOS_ROUTE = "/chaos/echo";

/**
 * The chaos function: echoes the caller's token (so an answer routed to the
 * wrong caller shows), and for Event calls first POSTs the token to the
 * recorder outside the worker, failing when the recorder did not take it.
 */
export const CHAOS_FUNCTION_CODE = `const recorder = process.env.RECORDER_URL;
export const handler = async (event) => {
  const http = typeof event?.requestContext?.http === "object";
  const input = http
    ? JSON.parse(event.isBase64Encoded ? Buffer.from(event.body, "base64").toString() : event.body)
    : event;
  if (input.record) {
    const res = await fetch(recorder, { method: "POST", body: input.token });
    if (res.status !== 204) throw new Error("recorder answered " + res.status);
  }
  const out = { token: input.token };
  return http ? { statusCode: 200, headers: { "content-type": "application/json" }, body: JSON.stringify(out) } : out;
};
`;
