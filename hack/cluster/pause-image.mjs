// Writes the pod sandbox ("pause") image of hack/cluster.sh as an OCI archive
// with ESB's own image writer: one layer holding the static binary built from
// hack/cluster/pause.c. Usage: node pause-image.mjs BINARY ARCHIVE IMAGE-NAME
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LayerBuilder } from "../../runtime/dist/image/layer-builder.js";
import { OciImageWriter, writeOciArchive } from "../../runtime/dist/image/oci-image-writer.js";

const [binary, archive, imageName] = process.argv.slice(2);
if (!binary || !archive || !imageName) {
  console.error("usage: node pause-image.mjs BINARY ARCHIVE IMAGE-NAME");
  process.exit(2);
}
const dir = await mkdtemp(join(tmpdir(), "esb-pause-"));
try {
  const writer = new OciImageWriter(dir);
  const layer = await writer.writeLayer(new LayerBuilder().addHostFile("/pause", binary, { mode: 0o755 }));
  await writer.writeImage({
    layers: [layer],
    config: { Entrypoint: ["/pause"], User: "65535:65535" },
    history: [{ created_by: "esb: static pause binary (hack/cluster/pause.c)" }],
    tag: imageName.slice(imageName.lastIndexOf(":") + 1),
    imageName,
  });
  await writeOciArchive(dir, archive);
} finally {
  await rm(dir, { recursive: true, force: true });
}
