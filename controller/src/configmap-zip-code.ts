import type { ResolvedFunctionCode } from "@esb/common";
import { readZipCode, ZipCodeError } from "@esb/common/zip-code";

/** `spec.code.configMap` with `zipKey`: that key's zip, unpacked with the one zip reader (AWS's rules and limits). */
export async function unzipConfigMapCode(
  ns: string,
  name: string,
  zipKey: string,
  data: Record<string, Uint8Array>,
): Promise<{ code: ResolvedFunctionCode } | { reason: string; message: string }> {
  const zip = data[zipKey];
  if (!zip)
    return {
      reason: "InvalidCode",
      message: `ConfigMap ${ns}/${name} has no key ${zipKey} (spec.code.configMap.zipKey)`,
    };
  const files: Record<string, Uint8Array> = {};
  try {
    await readZipCode(Buffer.from(zip), async (f) => {
      files[f.name] = f.data;
    });
  } catch (err) {
    if (!(err instanceof ZipCodeError)) throw err;
    return { reason: "InvalidCode", message: `ConfigMap ${ns}/${name} key ${zipKey}: ${err.message}` };
  }
  return { code: { files } };
}
