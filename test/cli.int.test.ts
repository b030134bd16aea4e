import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, sleep, waitUntil } from './helpers/processes.js';
import { startStack, type Stack } from './helpers/stack.js';

const CLI_MAIN = join(REPO, 'apps/cli/dist/main.js');

/** Runs `llmq <args>` against the stack; `stdin` is closed unless given. */
function cli(stack: Stack, args: string[], o: { stdin?: string; onStdout?: (out: string, child: ReturnType<typeof spawn>) => void } = {}) {
  const child = spawn(process.execPath, [CLI_MAIN, ...args], { cwd: REPO, env: { ...process.env, LLMQ_URL: stack.url }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    o.onStdout?.(stdout, child);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(o.stdin ?? '');
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

describe('llmq CLI against a running stack', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.spawnWorker();
  }, 60_000);
  afterAll(async () => stack?.close());

  it('enqueue --stream prints the answer of a job that was done before its stream opened', async () => {
    // echo answers at once: the job is usually completed before the CLI's event stream connects,
    // so the answer comes as the stored result, not as tokens. Each run must print it.
    for (let i = 0; i < 5; i++) {
      const run = await cli(stack, ['enqueue', 'echo', `alpha beta gamma ${i}`, '--stream']);
      expect(run, run.stderr).toMatchObject({ code: 0, stdout: `alpha beta gamma ${i}\n` });
    }
    // Streamed token by token, the answer is printed once, not again at the end.
    const slow = await cli(stack, ['enqueue', 'echo-slow', 'one two three', '--stream']);
    expect(slow).toMatchObject({ code: 0, stdout: 'one two three\n' });
  }, 30_000);

  it('enqueue takes messages from --json without reading standard input as a prompt', async () => {
    const run = await cli(stack, ['enqueue', 'echo', '--wait', '--json', JSON.stringify({ messages: [{ role: 'user', content: 'from messages' }] })], { stdin: '' });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).result.text).toBe('from messages');
    // Without one, standard input is still the prompt.
    const piped = await cli(stack, ['enqueue', 'echo', '--wait'], { stdin: 'from stdin' });
    expect(JSON.parse(piped.stdout).result.text).toBe('from stdin');
    const notObject = await cli(stack, ['enqueue', 'echo', 'x', '--json', 'null']);
    expect(notObject.code).toBe(1);
    expect(notObject.stderr).toContain('--json must be a JSON object, got null');
  }, 30_000);

  it('Ctrl-C during enqueue --stream leaves the job running and names the command that cancels it', async () => {
    const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
    const run = await cli(stack, ['enqueue', 'echo-slow', words, '--stream'], { onStdout: (out, child) => out.includes('w2') && child.kill('SIGINT') });
    expect(run.code).toBe(130);
    const id = /job (\S+) keeps running; `llmq cancel \1` stops it/.exec(run.stderr)?.[1];
    expect(id, run.stderr).toBeDefined();
    // 60 words at 20/s: still running after the CLI left.
    await sleep(200);
    expect((await stack.http('GET', `/v1/jobs/${id}`)).body.status).toBe('active');
    await stack.http('DELETE', `/v1/jobs/${id}`);
    await waitUntil('the job to be cancelled', async () => (await stack.http('GET', `/v1/jobs/${id}`)).body.status === 'cancelled', 10_000);
  }, 30_000);

  it('mongo-worker --help shows its help, not an unknown-flag error', async () => {
    const run = await cli(stack, ['mongo-worker', '--help']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^Usage: llmq mongo-worker/);
    expect(run.stdout).toContain('--mongo_connection_string');
  });

  it('llmq --version prints the version', async () => {
    const run = await cli(stack, ['--version']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${(JSON.parse(readFileSync(join(REPO, 'apps/cli/package.json'), 'utf8')) as { version: string }).version}\n`);
  });
});
