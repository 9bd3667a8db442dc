/**
 * A real S3-protocol server for tests: s3rver (npm, a fake S3 over HTTP),
 * in this process, on a free loopback port, with its data in a temp
 * directory removed on stop. The bucket is created at start. s3rver checks
 * signatures against the credentials below, and does not enforce
 * conditional PUTs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

/** The credentials s3rver accepts. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface TestS3Server {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  /** Options for an S3ObjectStore on this server (path style, its credentials). */
  storeOptions(root?: string): { bucket: string; endpoint: string; region: string; forcePathStyle: true; credentials: typeof S3RVER_CREDENTIALS; root?: string };
  stop(): Promise<void>;
}

export async function startS3Server(options: { bucket?: string } = {}): Promise<TestS3Server> {
  const bucket = options.bucket ?? 'reprise-test';
  const directory = await mkdtemp(join(tmpdir(), 'reprise-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  let stopped = false;
  return {
    endpoint,
    port: address.port,
    bucket,
    storeOptions: (root) => ({ bucket, endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3RVER_CREDENTIALS, ...(root === undefined ? {} : { root }) }),
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
