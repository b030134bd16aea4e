import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from './helpers/processes.js';

describe('service entry points that cannot start', () => {
  it('say why as one JSON log line at fatal, with the code, and exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'llmq-entry-'));
    const config = join(dir, 'llmq.yaml');
    writeFileSync(config, 'models: [{ name: 1 }]\n');
    for (const app of ['gateway', 'worker', 'connector']) {
      const run = spawnSync(process.execPath, [join(REPO, `apps/${app}/dist/main.js`)], { cwd: REPO, env: { ...process.env, LLMQ_CONFIG: config }, encoding: 'utf8', timeout: 30_000 });
      expect(run.status, `${app}: ${run.stdout}${run.stderr}`).toBe(1);
      // Every line it wrote is JSON (a log pipeline parsing JSON loses none), the last says why.
      const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.at(-1), app).toMatchObject({ level: 60, name: `llmq-${app}`, code: 'ERR_CONFIG_INVALID', param: 'models[0].name', msg: expect.stringMatching(/^could not start: .*llmq\.yaml: models\[0\]\.name/) });
      expect(run.stderr, app).toBe('');
    }
  });

  it('answer --help and --version, refuse other arguments, and start nothing', () => {
    // A Redis URL nothing listens on: a service that started anyway would sit retrying, and hit the timeout.
    const env = { ...process.env, REDIS_URL: 'redis://127.0.0.1:1', PORT: '0', LLMQ_METRICS_PORT: '0' };
    const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    for (const app of ['gateway', 'worker', 'connector']) {
      const main = join(REPO, `apps/${app}/dist/main.js`);
      const run = (...args: string[]) => spawnSync(process.execPath, [main, ...args], { cwd: REPO, env, encoding: 'utf8', timeout: 10_000 });
      const help = run('--help');
      expect(help.status, `${app} --help: ${help.stdout}${help.stderr}`).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: llmq-${app}\n`));
      expect(help.stdout).toContain('LLMQ_CONFIG');
      const v = run('--version');
      expect(v.status, app).toBe(0);
      expect(v.stdout).toBe(`${version}\n`);
      const wrong = run('--port', '9000');
      expect(wrong.status, app).toBe(2);
      expect(wrong.stderr).toMatch(new RegExp(`^llmq-${app}: unexpected argument "--port"\n`));
      expect(wrong.stdout).toBe('');
    }
  });
});
