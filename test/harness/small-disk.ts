import { execFile } from 'node:child_process';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A real file system that fills up: a tmpfs of `bytes` mounted on a new
 * directory (mounting needs root, as CI runs; a clear error otherwise).
 * `fill` leaves about `leaveBytes` free with filler files, `free` removes
 * them: a full disk and the operator freeing space, as they happen.
 */
export async function mountSmallDisk(bytes: number) {
  const dir = await mkdtemp(join(tmpdir(), 'reprise-small-disk-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`the disk-full tests mount a tmpfs, which needs root (CI runs as root): ${(err as Error).message}`);
  }
  const fillers: string[] = [];
  const available = async () => {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  };
  return {
    dir,
    available,
    async fill(leaveBytes: number): Promise<void> {
      for (let room = await available(); room > leaveBytes + 4096; room = await available()) {
        const file = join(dir, `filler-${fillers.length}`);
        await writeFile(file, Buffer.alloc(Math.min(4 << 20, room - leaveBytes)));
        fillers.push(file);
      }
    },
    async free(): Promise<void> {
      for (const file of fillers.splice(0)) await unlink(file);
    },
    async unmount(): Promise<void> {
      await run('umount', ['-l', dir]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
