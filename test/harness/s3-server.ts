/**
 * A real S3-protocol server for tests: s3rver (npm, a fake S3 over HTTP) in
 * a child process, on a free loopback port, with its data in a temp
 * directory removed on stop. The bucket is created at start. s3rver checks
 * signatures against the credentials below, and does not enforce
 * conditional PUTs.
 *
 * Why a child process run with --openssl-legacy-provider: s3rver 3.7 makes
 * ListObjectsV2 continuation tokens with DES, which OpenSSL 3 (Node 17+)
 * refuses without the legacy provider, so any listing longer than one page
 * (1,000 keys) answers 500. The flag cannot be turned on inside a running
 * process, and the store under test should speak plain ListObjectsV2 as it
 * would to S3.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PROJECT_ROOT } from './project-root.js';

/** The credentials s3rver accepts. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3StoreTestOptions {
  readonly bucket: string;
  readonly endpoint: string;
  readonly region: string;
  readonly forcePathStyle: true;
  readonly credentials: typeof S3RVER_CREDENTIALS;
  readonly root?: string;
}

export interface TestS3Server {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  /** Options for an S3ObjectStore on this server (or on `endpoint`, e.g. a fault proxy in front of it). */
  storeOptions(root?: string, endpoint?: string): S3StoreTestOptions;
  stop(): Promise<void>;
}

// From the package root, not this file: the benchmarks run this harness compiled, from dist/test/harness, where the .mjs is not copied.
const MAIN = join(PROJECT_ROOT, 'test', 'harness', 's3rver-main.mjs');

export async function startS3Server(options: { bucket?: string; startTimeoutMs?: number } = {}): Promise<TestS3Server> {
  const bucket = options.bucket ?? 'reprise-test';
  const directory = await mkdtemp(join(tmpdir(), 'reprise-s3rver-'));
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', MAIN, directory, bucket], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  // A test process that ends without stop() (a crash, a timeout) takes its s3rver with it.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', reap);
      resolve();
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within ${options.startTimeoutMs ?? 15_000} ms: ${stderr}`)), options.startTimeoutMs ?? 15_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${code} before it listened: ${stderr}`));
    });
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve((JSON.parse(line) as { port: number }).port);
      } catch {
        reject(new Error(`s3rver said '${line}' instead of its port`));
      }
    });
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await rm(directory, { recursive: true, force: true });
    throw err;
  });
  const endpoint = `http://127.0.0.1:${port}`;
  let stopped = false;
  return {
    endpoint,
    port,
    bucket,
    storeOptions: (root, at) => ({ bucket, endpoint: at ?? endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3RVER_CREDENTIALS, ...(root === undefined ? {} : { root }) }),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      await rm(directory, { recursive: true, force: true });
    },
  };
}
