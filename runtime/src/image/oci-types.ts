/** OCI image-spec media types ESB writes and reads. */
export const MediaType = {
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
  config: "application/vnd.oci.image.config.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
} as const;

/** Annotation holding the tag (OCI) and the full image name (containerd) in index.json. */
export const Annotation = {
  refName: "org.opencontainers.image.ref.name",
  containerdImageName: "io.containerd.image.name",
} as const;

/** A content descriptor (OCI image-spec `descriptor.md`). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}

/** The image configuration's runtime part (`config` in the OCI image config). */
export interface ImageRunConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, Record<string, never>>;
}

/** One `history` entry of an image config. */
export interface HistoryEntry {
  created?: string;
  created_by?: string;
  comment?: string;
  empty_layer?: boolean;
}

/** The OCI image configuration (application/vnd.oci.image.config.v1+json). */
export interface ImageConfig {
  created?: string;
  architecture: string;
  os: string;
  config: ImageRunConfig;
  rootfs: { type: "layers"; diff_ids: string[] };
  history?: HistoryEntry[];
}

/** The OCI image manifest (application/vnd.oci.image.manifest.v1+json). */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** The OCI image index (index.json of a layout). */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

/** A layer written to a layout: its descriptor plus the digest of its uncompressed tar (the config's diff_id). */
export interface LayerDescriptor extends Descriptor {
  diffId: string;
}
