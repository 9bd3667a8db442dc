// The s3rver process test/harness/s3-server.ts starts (plain JS: it runs
// under `node --openssl-legacy-provider`, outside vitest). Arguments: data
// directory, bucket. Prints {"port":N} once it listens; stops on SIGTERM.
import S3rver from 's3rver';

const [directory, bucket] = process.argv.slice(2);
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
const address = await server.run();
process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);
process.on('SIGTERM', () => {
  server.close().finally(() => process.exit(0));
});
