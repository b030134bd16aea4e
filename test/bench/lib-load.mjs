// HTTP load with autocannon. Imported, it runs in the caller's process; run as a script
// (`node lib-load.mjs '<json options>'`) it runs in its own process and prints one JSON line,
// so on a small machine the load generator does not share the gateway's event loop.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

/** Runs autocannon and keeps only the figures the bench reports. */
export async function load({ url, method = 'POST', body, headers = { 'content-type': 'application/json' }, connections = 50, duration = 10, pipelining = 1 }) {
  const result = await autocannon({ url, method, body, headers, connections, duration, pipelining });
  return {
    duration_s: result.duration,
    requests_total: result.requests.total,
    requests_per_s: result.requests.average,
    ok_2xx: result['2xx'],
    non_2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    latency_ms: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max, mean: result.latency.mean },
  };
}

/** Same as `load`, in a child Node process. */
export function loadInChild(options) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => (out += chunk));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`load generator exited with code ${code}`));
      const line = out.trim().split('\n').at(-1) ?? '';
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`load generator printed no result: ${out.slice(0, 500)}`));
      }
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const options = JSON.parse(process.argv[2] ?? '{}');
  load(options).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
