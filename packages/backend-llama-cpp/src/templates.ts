/**
 * Named prompt templates: files in `templates_dir` that turn a job's `prompt` / `messages` into
 * the model's prompt text.
 *
 * - `<name>.template`: the file's text, verbatim (a trailing newline is kept), with `{system}` and
 *   `{prompt}` replaced. `{prompt}` is the job's `prompt`, or its one user message; `{system}` is
 *   its system messages joined by a blank line, or empty. Any other braces stay as they are. It is
 *   single-turn: a job with assistant messages or several user messages needs a `.jinja` template.
 * - `<name>.jinja`: a Hugging Face style chat template rendered with `messages` (a `prompt` job is
 *   one user message), `add_generation_prompt: true`, `bos_token`, `eos_token` and
 *   `raise_exception(message)`.
 *
 * Control tokens written in the template (`<|user|>`, `<|im_start|>`, `{{ bos_token }}`) become the
 * model's special tokens; text that comes from the job never does, so a prompt cannot forge a turn.
 */
import { readdirSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LlmqError, type GenerationRequest, type Message } from '@llmq/core';

/** A piece of rendered prompt; `special` pieces may contain control tokens, the others are plain text. */
export interface PromptSegment {
  text: string;
  special: boolean;
}

export interface TemplateTokens {
  /** Text of the model's beginning-of-sequence token, `""` when it has none. */
  bos: string;
  /** Text of the model's end-of-sequence token, `""` when it has none. */
  eos: string;
}

export type TemplateInput = Pick<GenerationRequest, 'prompt' | 'messages'>;

export interface PromptTemplate {
  name: string;
  kind: 'template' | 'jinja';
  /** Where it was read from (`<inline>` for `chat_template`). */
  path: string;
  render(input: TemplateInput, tokens: TemplateTokens): PromptSegment[];
}

const TEMPLATE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

export function segmentsText(segments: readonly PromptSegment[]): string {
  return segments.map((s) => s.text).join('');
}

function messagesOf(input: TemplateInput): Message[] {
  if (input.messages !== undefined) return input.messages;
  return [{ role: 'user', content: input.prompt ?? '' }];
}

const isFileSync = (path: string) => statSync(path, { throwIfNoEntry: false })?.isFile() === true;

/** A chat a `.template` can render (system messages and one user message), as its two fields; else undefined. */
function singleTurn(messages: NonNullable<TemplateInput['messages']>): { prompt: string; system: string } | undefined {
  const rest = messages.filter((m) => m.role !== 'system');
  const only = rest[0];
  if (rest.length !== 1 || only === undefined || only.role !== 'user') return undefined;
  return { prompt: only.content, system: messages.filter((m) => m.role === 'system').map((m) => m.content).join('\n\n') };
}

const singleTurnMessage = (name: string) => `template "${name}" is single-turn (system messages and one user message); use a .jinja template for multi-turn chat`;

/**
 * For the check at enqueue: the problem with `messages` for the template `name` in `dir`, when that
 * is a plain `.template` and the chat has more than one turn.
 */
export function singleTurnProblem(dir: string, name: string | undefined, messages: TemplateInput['messages']): { param: string; message: string } | undefined {
  if (name === undefined || messages === undefined || !TEMPLATE_NAME.test(name) || singleTurn(messages) !== undefined) return undefined;
  if (!isFileSync(join(dir, `${name}.template`))) return undefined;
  return { param: 'messages', message: singleTurnMessage(name) };
}

/** Compiles a `.template` (`{system}` / `{prompt}` substitution). */
export function compilePlainTemplate(name: string, source: string, path = '<inline>'): PromptTemplate {
  const parts = source.split(/(\{system\}|\{prompt\})/);
  return {
    name,
    kind: 'template',
    path,
    render(input) {
      let prompt: string;
      let system = '';
      if (input.messages === undefined) {
        prompt = input.prompt ?? '';
      } else {
        const turn = singleTurn(input.messages);
        if (turn === undefined) throw new LlmqError('ERR_REQUEST_INVALID', singleTurnMessage(name), { param: 'messages' });
        ({ prompt, system } = turn);
      }
      const segments: PromptSegment[] = [];
      for (const part of parts) {
        if (part === '{system}') segments.push({ text: system, special: false });
        else if (part === '{prompt}') segments.push({ text: prompt, special: false });
        else segments.push({ text: part, special: true });
      }
      return segments.filter((s) => s.text !== '');
    },
  };
}

type JinjaTemplate = { render(items?: Record<string, unknown>): string };

/** Marks where message contents go, so they can be tokenized as plain text. */
const sentinel = (i: number) => `\u0000llmq${i}\u0000`;
const SENTINEL = /\u0000llmq(\d+)\u0000/g;

/** Compiles a Hugging Face style Jinja chat template. */
export async function compileJinjaTemplate(name: string, source: string, path = '<inline>'): Promise<PromptTemplate> {
  const { Template } = await import('@huggingface/jinja');
  let template: JinjaTemplate;
  try {
    template = new Template(source);
  } catch (err) {
    throw new LlmqError('ERR_CONFIG_INVALID', `template "${name}" (${path}) is not valid Jinja: ${(err as Error).message}`, { cause: err });
  }
  const run = (messages: Message[], tokens: TemplateTokens): string => {
    try {
      return template.render({
        messages,
        add_generation_prompt: true,
        bos_token: tokens.bos,
        eos_token: tokens.eos,
        // raise_exception(message) is built into @huggingface/jinja.
      });
    } catch (err) {
      throw new LlmqError('ERR_REQUEST_INVALID', `template "${name}" rejected the request: ${(err as Error).message}`, {
        param: 'messages',
        cause: err,
      });
    }
  };
  return {
    name,
    kind: 'jinja',
    path,
    render(input, tokens) {
      // NUL never belongs in a prompt; dropping it keeps job text from imitating the markers.
      const messages = messagesOf(input).map((m) => (m.content.includes('\u0000') ? { ...m, content: m.content.replaceAll('\u0000', '\uFFFD') } : m));
      const rendered = run(
        messages.map((m, i) => ({ ...m, content: sentinel(i) })),
        tokens,
      );
      const segments: PromptSegment[] = [];
      let last = 0;
      for (const match of rendered.matchAll(SENTINEL)) {
        const content = messages[Number(match[1])]?.content;
        if (content === undefined) break;
        segments.push({ text: rendered.slice(last, match.index), special: true });
        segments.push({ text: content, special: false });
        last = match.index + match[0].length;
      }
      segments.push({ text: rendered.slice(last), special: true });
      if (segments.some((s) => s.special && s.text.includes('\u0000'))) {
        // The template transformed the contents (e.g. `| upper`), so the markers did not survive:
        // render the real text; control tokens inside contents are then not kept out (README, Limits).
        return [{ text: run(messages, tokens), special: true }];
      }
      return segments.filter((s) => s.text !== '');
    },
  };
}

/**
 * Why `template` would leave a job's text out of the prompt, from a sample render; undefined when it
 * keeps it (or when the sample is refused, which says nothing either way). Catches a misspelt
 * variable (`{{ message.contnet }}` renders as empty in Jinja) or a `.template` without `{prompt}`.
 */
export function droppedContentProblem(template: PromptTemplate): string | undefined {
  const texts = ['llmq-sample-question-one', 'llmq-sample-answer', 'llmq-sample-question-two'];
  const input: TemplateInput =
    template.kind === 'template'
      ? { messages: [{ role: 'user', content: texts[0]! }] }
      : { messages: texts.map((content, i) => ({ role: i % 2 === 0 ? ('user' as const) : ('assistant' as const), content })) };
  let rendered: string;
  try {
    rendered = segmentsText(template.render(input, { bos: '<s>', eos: '</s>' })).toLowerCase();
  } catch {
    return undefined;
  }
  const users = template.kind === 'template' ? [texts[0]!] : [texts[0]!, texts[2]!];
  const missing = users.filter((t) => !rendered.includes(t));
  if (missing.length === 0) return undefined;
  return template.kind === 'template'
    ? 'it has no {prompt}, so the job\'s prompt is left out'
    : `a sample chat of ${input.messages!.length} messages rendered without ${missing.length === users.length ? 'any' : 'some'} of its user messages' content (a misspelt variable renders as empty)`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

const TEMPLATE_FILE = /^(.+)\.(template|jinja)$/;

/**
 * For the gateway's check at enqueue (synchronous, no file read): `undefined` when `<dir>` holds
 * `<name>.template` or `<name>.jinja`, else the names of the templates it does hold.
 */
export function findTemplate(dir: string, name: string): string[] | undefined {
  if (TEMPLATE_NAME.test(name) && (isFileSync(join(dir, `${name}.template`)) || isFileSync(join(dir, `${name}.jinja`)))) return undefined;
  return listTemplates(dir);
}

/** The names of the templates `<dir>` holds, sorted; none when it cannot be read. */
export function listTemplates(dir: string): string[] {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return [];
  }
  const names = files.flatMap((file) => {
    const match = TEMPLATE_FILE.exec(file);
    return match?.[1] !== undefined && TEMPLATE_NAME.test(match[1]) ? [match[1]] : [];
  });
  return [...new Set(names)].sort();
}

/**
 * Reads and compiles `<dir>/<name>.template` or `<dir>/<name>.jinja`. An unknown name is the
 * request's fault (`ERR_REQUEST_INVALID`); both files existing is the config's (`ERR_CONFIG_INVALID`).
 */
export async function loadTemplate(dir: string, name: string): Promise<PromptTemplate> {
  if (!TEMPLATE_NAME.test(name)) {
    throw new LlmqError('ERR_REQUEST_INVALID', `invalid template name "${name}"`, { param: 'template' });
  }
  const plainPath = join(dir, `${name}.template`);
  const jinjaPath = join(dir, `${name}.jinja`);
  const [plain, jinja] = await Promise.all([isFile(plainPath), isFile(jinjaPath)]);
  if (plain && jinja) {
    throw new LlmqError('ERR_CONFIG_INVALID', `template "${name}" is ambiguous: both ${plainPath} and ${jinjaPath} exist`);
  }
  if (!plain && !jinja) {
    throw new LlmqError('ERR_REQUEST_INVALID', `unknown template "${name}" (no ${name}.template or ${name}.jinja in ${dir})`, {
      param: 'template',
    });
  }
  const path = plain ? plainPath : jinjaPath;
  const source = await readFile(path, 'utf8');
  return plain ? compilePlainTemplate(name, source, path) : compileJinjaTemplate(name, source, path);
}
