/**
 * The llama-cpp backend instance. Loaded only through `create()` (a dynamic import), because it
 * pulls in node-llama-cpp and its native binary.
 */
import { randomInt } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import {
  LlamaText,
  SpecialTokensText,
  TokenBias,
  LlamaGrammarEvaluationState,
  LlamaVocabularyType,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type SequenceEvaluateOptions,
  type Token,
  type Llama,
} from 'node-llama-cpp';
import {
  errorDetail,
  LlmqError,
  type AdapterContext,
  type Backend,
  type GenerateInput,
  type GenerateOutput,
  type GenerationRequest,
  type Logger,
  type ResponseFormat,
} from '@llmq/core';
import { BatchJoiner } from './batch-join.js';
import { SequenceOrder } from './batch-order.js';
import { DEFAULT_CONTEXT_SIZE, type ResolvedLlamaCppOptions } from './config.js';
import { closingBias, closingStart, finiteJsonNumbers } from './json-grammar.js';
import { responseFormatProblem, toGrammarSchema } from './json-schema.js';
import { acquireModel, type ModelHandle } from './runtime.js';
import { SlotPool, abortReason, raceAbort } from './slot-pool.js';
import { counters } from './stats.js';
import { StopStringStream } from './stop-strings.js';
import { compileJinjaTemplate, droppedContentProblem, listTemplates, loadTemplate, type PromptSegment, type PromptTemplate } from './templates.js';

/** Sampling defaults when a job leaves a parameter out: llama.cpp server's defaults. */
export const SAMPLING_DEFAULTS = { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05 } as const;

/** Logit used to keep end-of-generation tokens out until `min_tokens`; finite, so a grammar that allows nothing else still can end. */
const SUPPRESS_EOG = -1e6;
/** Most JSON-schema grammars kept compiled per backend. */
const GRAMMAR_CACHE_SIZE = 32;

interface Slot {
  index: number;
  sequence: LlamaContextSequence;
}

/** Set by a job's decode when its sequence is still decoding a token the answer does not need. */
interface DecodeEnd {
  drained: Promise<void> | undefined;
}

/** A prompt ready to decode. */
export interface PreparedPrompt {
  /** Tokens as decoded, including the beginning-of-sequence token when the model uses one. */
  tokens: Token[];
  /** Extra stop triggers the chat format needs (end-of-turn markers). */
  stopTriggers: LlamaText[];
  /** The prompt as text (special tokens written out), for debugging and tests. */
  text: string;
  /** How it was built: `raw`, `chat` (the model's template), `chat_template` (config), or `template:<name>`. */
  source: string;
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw abortReason(signal);
}

/** The token llama.cpp puts before every input (node-llama-cpp's rule, as in its LlamaCompletion). */
function beginningToken(model: LlamaModel): Token | null {
  switch (model.vocabularyType) {
    case LlamaVocabularyType.rwkv:
    case LlamaVocabularyType.ugm:
      return null;
    case LlamaVocabularyType.wpm:
      return model.tokens.bos;
    default:
      return model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
  }
}

/**
 * Template text may hold control tokens; only the vocabulary's special-token strings in it are
 * tokenized as such, the rest is text, joined with its neighbours (so a boundary between template
 * text and job text does not change the tokens, as llama.cpp would tokenize the whole string).
 */
function toLlamaText(segments: readonly PromptSegment[], specials: RegExp | undefined): LlamaText {
  const values: (string | SpecialTokensText)[] = [];
  for (const segment of segments) {
    if (!segment.special || specials === undefined) {
      values.push(segment.text);
      continue;
    }
    let last = 0;
    for (const match of segment.text.matchAll(specials)) {
      values.push(segment.text.slice(last, match.index), new SpecialTokensText(match[0]));
      last = match.index + match[0].length;
    }
    values.push(segment.text.slice(last));
  }
  return LlamaText(values.filter((v) => v !== ''));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function toChatHistory(messages: NonNullable<GenerationRequest['messages']>): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m) =>
    m.role === 'system'
      ? { type: 'system', text: m.content }
      : m.role === 'user'
        ? { type: 'user', text: m.content }
        : { type: 'model', response: [m.content] },
  );
  // A trailing assistant message is a prefix the answer continues; otherwise open a new turn.
  if (history.at(-1)?.type !== 'model') history.push({ type: 'model', response: [] });
  return history;
}

function stopStrings(stop: GenerationRequest['stop']): string[] {
  if (stop === undefined) return [];
  return Array.isArray(stop) ? stop : [stop];
}

export class LlamaCppBackend implements Backend {
  readonly name: string;
  readonly options: ResolvedLlamaCppOptions;
  /** Actual context size of each sequence (llama.cpp may round the configured one up). */
  readonly contextSize: number;
  private readonly handle: ModelHandle;
  private readonly llama: Llama;
  private readonly model: LlamaModel;
  private readonly context: LlamaContext;
  private readonly pool: SlotPool<Slot>;
  private readonly logger: Logger;
  private readonly chatWrapper: ChatWrapper | undefined;
  private readonly chatTemplate: PromptTemplate | undefined;
  private readonly templates = new Map<string, Promise<PromptTemplate>>();
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();
  private jsonGrammar: Promise<LlamaGrammar> | undefined;
  private specials: RegExp | null | undefined;
  private readonly noBias: TokenBias;
  private biases: { noEog: TokenBias; closing: TokenBias; closingNoEog: TokenBias } | undefined;
  private readonly running = new Set<Promise<unknown>>();
  /** Set while a job waits for the context lock (see withDecodePaused); running jobs wait on it between tokens. */
  private pause: Promise<void> | undefined;
  private resume: (() => void) | undefined;
  private pausers = 0;
  private closed = false;

  private constructor(init: {
    name: string;
    options: ResolvedLlamaCppOptions;
    handle: ModelHandle;
    context: LlamaContext;
    logger: Logger;
    chatWrapper: ChatWrapper | undefined;
    chatTemplate: PromptTemplate | undefined;
  }) {
    this.name = init.name;
    this.options = init.options;
    this.handle = init.handle;
    this.llama = init.handle.llama;
    this.model = init.handle.model;
    this.context = init.context;
    this.contextSize = init.context.contextSize;
    this.logger = init.logger;
    this.chatWrapper = init.chatWrapper;
    this.chatTemplate = init.chatTemplate;
    this.noBias = new TokenBias(init.handle.model.tokenizer);
    const slots: Slot[] = [];
    // Concurrent jobs decode in one batch per step (see BatchJoiner); a lone job never waits.
    const joiner = new BatchJoiner(() => this.pool.available < this.options.sequences - 1);
    let joining = true;
    for (let index = 0; index < init.options.sequences; index++) {
      const sequence = init.context.getSequence();
      joining = joiner.attach(sequence) && joining;
      slots.push({ index, sequence });
    }
    this.pool = new SlotPool(slots);
    if (!joining && init.options.sequences > 1) {
      this.logger.warn('this node-llama-cpp version lacks the hook that lets concurrent jobs share each decode batch: they decode in smaller batches (slower)');
    }
  }

  static async create(name: string, options: ResolvedLlamaCppOptions, ctx: AdapterContext): Promise<LlamaCppBackend> {
    // The host binds the model's name and backend type (see createBackend); binding them again would repeat the keys in every line.
    const logger = ctx.logger;
    const started = performance.now();
    const handle = await acquireModel(options, logger);
    if (ctx.signal.aborted) {
      // The host began shutting down while the model loaded.
      await handle.release();
      throw abortReason(ctx.signal);
    }
    const { model } = handle;
    let context: LlamaContext | undefined;
    const unordered = () => logger.warn('this node-llama-cpp version does not show which sequence each decode belongs to: concurrent jobs may take several passes per decode step (slower)');
    const order = new SequenceOrder(unordered);
    try {
      const contextSize = options.contextSize ?? Math.min(DEFAULT_CONTEXT_SIZE, model.trainContextSize);
      try {
        context = await model.createContext({
          contextSize,
          sequences: options.sequences,
          threads: options.threads,
          ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
          // Each batch in sequence order: one forward pass per step rather than several (see SequenceOrder).
          batching: { itemPrioritizationStrategy: order.strategy },
          failedCreationRemedy: false,
        });
      } catch (err) {
        throw new LlmqError(
          'ERR_MODEL_LOAD',
          `could not create a context of ${options.sequences} × ${contextSize} tokens for ${options.modelPath}: ${(err as Error).message}` +
            ' (lower context_size or the model\'s concurrency)',
          { cause: err },
        );
      }
      counters.contextsCreated++;
      counters.liveContexts++;
      if (!order.attach(context) && options.sequences > 1) unordered();
      const chatTemplate =
        options.chatTemplate === undefined ? undefined : await compileJinjaTemplate('chat_template', options.chatTemplate);
      const chatWrapper = chatTemplate === undefined ? resolveChatWrapper(model) : undefined;
      if (chatWrapper !== undefined && options.template === undefined && typeof model.fileInfo.metadata.tokenizer?.chat_template !== 'string') {
        // node-llama-cpp then guesses the format from the model's name in its metadata, or from
        // the file's name: renaming the file can change it. Say so once, where an operator looks.
        logger.warn(
          { model_path: options.modelPath, chat_format: chatWrapper.wrapperName },
          `the GGUF has no chat template (tokenizer.chat_template): chat messages use node-llama-cpp's guess, ${chatWrapper.wrapperName}, made from the model's name or the file's name; set chat_template or a named template if that is wrong`,
        );
      }
      const backend = new LlamaCppBackend({ name, options, handle, context, logger, chatWrapper, chatTemplate });
      const warmUpMs = await backend.warmUp();
      if (options.template !== undefined) {
        // A default template that is not there is a config mistake: fail at start-up, not per job.
        await backend.template(options.template).catch((err: unknown) => {
          throw new LlmqError('ERR_CONFIG_INVALID', `options.template: ${errorDetail((err as Error).message)}`, { cause: err, param: 'options.template' });
        });
      }
      await backend.checkTemplates();
      logger.info(
        {
          model_path: options.modelPath,
          loaded: handle.loaded,
          load_ms: Math.round(performance.now() - started),
          warm_up_ms: warmUpMs,
          gpu: handle.llama.gpu,
          gpu_layers: model.gpuLayers,
          // What node-llama-cpp used (it reads the file where mapping is not supported).
          mmap: model.useMmap,
          threads: options.threads,
          sequences: options.sequences,
          context_size: backend.contextSize,
          train_context_size: model.trainContextSize,
          chat_format: chatTemplate ? 'chat_template' : (chatWrapper?.wrapperName ?? 'none'),
          default_template: options.template,
        },
        'llama-cpp model ready',
      );
      return backend;
    } catch (err) {
      if (context !== undefined && !context.disposed) {
        await context.dispose();
        counters.liveContexts--;
      }
      await handle.release();
      throw err;
    }
  }

  async check(): Promise<void> {
    if (this.closed) throw new LlmqError('ERR_BACKEND_UNAVAILABLE', `llama-cpp backend "${this.name}" is closed`);
    if (this.model.disposed || this.context.disposed) {
      throw new LlmqError('ERR_BACKEND_UNAVAILABLE', `llama-cpp backend "${this.name}": model or context was disposed`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pool.close(new LlmqError('ERR_WORKER_SHUTDOWN', `llama-cpp backend "${this.name}" closed`));
    // Jobs still decoding end with a disposed-context error the caller maps to ERR_WORKER_SHUTDOWN.
    if (!this.context.disposed) {
      await this.context.dispose();
      counters.liveContexts--;
    }
    await Promise.allSettled([...this.running]);
    await this.handle.release();
    this.logger.info({ model_path: this.options.modelPath }, 'llama-cpp backend closed');
  }

  /** Jobs decoding now and jobs waiting for a sequence. */
  get load(): { sequences: number; busy: number; waiting: number } {
    return { sequences: this.options.sequences, busy: this.options.sequences - this.pool.available, waiting: this.pool.waiting };
  }

  /** Sizes of the per-backend caches (bounded: at most 32 grammars; templates by distinct existing name). */
  get cacheSizes(): { grammars: number; templates: number } {
    return { grammars: this.grammars.size, templates: this.templates.size };
  }

  /**
   * Compiles every template in the templates folder once, so that a broken one (a Jinja syntax
   * error, both `x.template` and `x.jinja`) is reported when the worker starts rather than by the
   * first job that names it. Those jobs still fail (ERR_CONFIG_INVALID); the rest are served.
   */
  private async checkTemplates(): Promise<void> {
    const broken: { name: string; error: string }[] = [];
    const dropping: { name: string; problem: string }[] = [];
    for (const name of listTemplates(this.options.templatesDir)) {
      const template = await this.template(name).catch((err: unknown) => void broken.push({ name, error: errorDetail((err as Error).message) }));
      const problem = template === undefined ? undefined : droppedContentProblem(template);
      if (problem !== undefined) dropping.push({ name, problem });
    }
    if (this.chatTemplate !== undefined) {
      const problem = droppedContentProblem(this.chatTemplate);
      if (problem !== undefined) dropping.push({ name: 'chat_template', problem });
    }
    if (broken.length > 0) {
      this.logger.warn(
        { templates_dir: this.options.templatesDir, broken_templates: broken },
        `${broken.length === 1 ? 'a template does' : `${broken.length} templates do`} not load (${broken.map((b) => b.name).join(', ')}): jobs that name ${broken.length === 1 ? 'it' : 'them'} fail until the file is fixed`,
      );
    }
    for (const { name, problem } of dropping) {
      // Served as written (a template may mean it), but most likely a mistake that no job would report.
      this.logger.warn({ templates_dir: this.options.templatesDir, template: name }, `template "${name}" leaves the job's text out of the prompt: ${problem}`);
    }
  }

  private template(name: string): Promise<PromptTemplate> {
    let pending = this.templates.get(name);
    if (pending === undefined) {
      pending = loadTemplate(this.options.templatesDir, name);
      // Failed lookups are not cached: a template added later is found.
      void pending.catch(() => this.templates.delete(name));
      this.templates.set(name, pending);
    }
    return pending;
  }

  /** Matches the text of every special token of the vocabulary (longest first); built once. */
  private specialTokenPattern(): RegExp | undefined {
    if (this.specials === undefined) {
      const texts = new Set<string>();
      for (const token of this.model.iterateAllTokens()) {
        if (!this.model.isSpecialToken(token)) continue;
        const text = this.model.detokenize([token], true);
        if (text !== '') texts.add(text);
      }
      const sorted = [...texts].sort((a, b) => b.length - a.length).map(escapeRegExp);
      this.specials = sorted.length === 0 ? null : new RegExp(sorted.join('|'), 'g');
    }
    return this.specials ?? undefined;
  }

  /** Renders and tokenizes the request's prompt exactly as `generate()` would. */
  async preparePrompt(request: Pick<GenerationRequest, 'prompt' | 'messages' | 'template'>): Promise<PreparedPrompt> {
    const model = this.model;
    const tokensText = { bos: model.tokens.bosString ?? '', eos: model.tokens.eosString ?? '' };
    const templateName = request.template ?? this.options.template;
    let text: LlamaText;
    let stopTriggers: LlamaText[] = [];
    let source: string;
    if (templateName !== undefined) {
      const template = await this.template(templateName);
      text = toLlamaText(template.render(request, tokensText), this.specialTokenPattern());
      source = `template:${templateName}`;
    } else if (request.messages !== undefined) {
      if (this.chatTemplate !== undefined) {
        text = toLlamaText(this.chatTemplate.render(request, tokensText), this.specialTokenPattern());
        source = 'chat_template';
      } else if (this.chatWrapper !== undefined) {
        const state = this.chatWrapper.generateContextState({ chatHistory: toChatHistory(request.messages) });
        text = state.contextText;
        stopTriggers = state.stopGenerationTriggers;
        source = 'chat';
      } else {
        throw new LlmqError('ERR_REQUEST_INVALID', 'this model has no chat template; send "prompt" or name a "template"', {
          param: 'messages',
        });
      }
    } else {
      text = LlamaText(request.prompt ?? '');
      source = 'raw';
    }
    let tokens = text.tokenize(model.tokenizer);
    const first = beginningToken(model);
    if (first !== null && tokens[0] !== first) tokens = [first, ...tokens];
    return { tokens, stopTriggers, text: model.detokenize(tokens, true), source };
  }

  private grammarFor(format: ResponseFormat | undefined): Promise<LlamaGrammar> | undefined {
    if (format === undefined || format.type === 'text') return undefined;
    if (format.type === 'json_object') {
      this.jsonGrammar ??= this.llama.getGrammarFor('json').then((g) => this.withFiniteNumbers(g));
      return this.jsonGrammar;
    }
    const schema = format.json_schema.schema;
    const key = JSON.stringify(schema);
    let pending = this.grammars.get(key);
    if (pending === undefined) {
      pending = (async () => {
        // The gateway checked it; a job enqueued some other way is checked here.
        const problem = responseFormatProblem(format);
        if (problem !== undefined) throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `${problem.param}: ${problem.message}`, { param: problem.param });
        try {
          return await this.withFiniteNumbers(await this.llama.createGrammarForJsonSchema(toGrammarSchema(schema) as never));
        } catch (err) {
          throw new LlmqError('ERR_BACKEND_BAD_REQUEST', `response_format.json_schema is not supported: ${(err as Error).message}`, {
            param: 'response_format',
            cause: err,
          });
        }
      })();
      void pending.catch(() => this.grammars.delete(key));
      if (this.grammars.size >= GRAMMAR_CACHE_SIZE) {
        const oldest = this.grammars.keys().next().value;
        if (oldest !== undefined) this.grammars.delete(oldest);
      }
      this.grammars.set(key, pending);
    } else {
      // Most recently used last.
      this.grammars.delete(key);
      this.grammars.set(key, pending);
    }
    return pending;
  }

  private withFiniteNumbers(grammar: LlamaGrammar): Promise<LlamaGrammar> {
    return this.llama.createGrammar({
      grammar: finiteJsonNumbers(grammar.grammar),
      stopGenerationTriggers: grammar.stopGenerationTriggers,
      trimWhitespaceSuffix: grammar.trimWhitespaceSuffix,
    });
  }

  /** Token biases, built once: end-of-generation suppression and JSON closing mode. */
  private tokenBiases(): NonNullable<LlamaCppBackend['biases']> {
    if (this.biases !== undefined) return this.biases;
    const model = this.model;
    const eog: Token[] = [];
    const closing = new TokenBias(model.tokenizer);
    for (const token of model.iterateAllTokens()) {
      if (model.isEogToken(token)) {
        eog.push(token);
        continue;
      }
      const logit = closingBias(model.detokenize([token], false));
      if (logit !== undefined) closing.set(token, { logit });
    }
    const withEogSuppressed = (base: TokenBias | undefined): TokenBias => {
      const bias = new TokenBias(model.tokenizer);
      // TokenBias.set() skips end-of-generation tokens on purpose, so write its map directly.
      const map = (bias as unknown as { _biases?: unknown })._biases;
      if (!(map instanceof Map)) {
        throw new LlmqError('ERR_BACKEND_FAILED', 'min_tokens needs node-llama-cpp 3.22 (TokenBias internals changed)', {
          retryable: false,
        });
      }
      if (base !== undefined) {
        for (const [token, logit] of (base as unknown as { _biases: Map<Token, number> })._biases) map.set(token, logit);
      }
      for (const token of eog) map.set(token, SUPPRESS_EOG);
      return bias;
    };
    this.biases = {
      noEog: withEogSuppressed(undefined),
      closing,
      closingNoEog: withEogSuppressed(closing),
    };
    return this.biases;
  }

  /**
   * Decodes a prompt and two tokens on one sequence, then clears it, before the first job: a GPU
   * backend builds its kernels or pipelines on first use (Vulkan on an H200: 64 tokens of a fresh
   * context took 2.1 s, the next 64 took 0.06 s), which the first job would otherwise wait through;
   * and a device that loads but cannot decode fails here, at start-up, not under a job.
   * Returns the milliseconds it took.
   */
  private async warmUp(): Promise<number> {
    const started = performance.now();
    const slot = await this.pool.acquire(new AbortController().signal);
    try {
      // A GPU runs a long batch with other kernels than a step of a token or a few (Vulkan from 9
      // tokens, CUDA from ~32): on a GPU the prompt is long enough to build both.
      const text = this.llama.gpu === false ? 'Hello there' : 'Hello there, this decode warms the GPU up. '.repeat(16);
      const first = beginningToken(this.model);
      const prompt = [...(first === null ? [] : [first]), ...this.model.tokenize(text)].slice(
        0,
        Math.max(2, Math.min(64, this.contextSize - 4, this.context.batchSize)),
      );
      const iterator = slot.sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true });
      try {
        for (let i = 0; i < 2 && !(await iterator.next()).done; i++);
      } finally {
        await iterator.return();
      }
      await slot.sequence.clearHistory();
    } catch (err) {
      throw new LlmqError('ERR_MODEL_LOAD', `${this.options.modelPath} loaded but could not be decoded (gpu: ${String(this.llama.gpu)}): ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      this.pool.release(slot);
    }
    return Math.round(performance.now() - started);
  }

  async generate(input: GenerateInput): Promise<GenerateOutput> {
    const { request, signal } = input;
    if (this.closed) throw new LlmqError('ERR_WORKER_SHUTDOWN', `llama-cpp backend "${this.name}" is closed`);
    throwIfAborted(signal);
    const prompt = await this.preparePrompt(request);
    const promptTokens = prompt.tokens.length;
    if (promptTokens >= this.contextSize) {
      throw new LlmqError(
        'ERR_BACKEND_CONTEXT_LENGTH',
        `the prompt is ${promptTokens} tokens; this model's context holds ${this.contextSize} per job (prompt + completion)`,
        {
          param: request.messages === undefined ? 'prompt' : 'messages',
          details: { prompt_tokens: promptTokens, context_size: this.contextSize },
        },
      );
    }
    const grammar = await this.grammarFor(request.response_format);
    throwIfAborted(signal);
    const slot = await this.pool.acquire(signal);
    const end: DecodeEnd = { drained: undefined };
    const run = this.decode(slot, prompt, grammar, input, end);
    // The sequence goes back to the pool only once decoding has really stopped, which can be a
    // token after the job's answer (see decode()).
    const stopped = run.catch(() => undefined).then(() => end.drained);
    this.running.add(stopped);
    void stopped.then(() => {
      this.running.delete(stopped);
      if (!this.closed) this.pool.release(slot);
    });
    return raceAbort(run, signal);
  }

  /**
   * Runs `fn` (which needs node-llama-cpp's context lock) while every running job pauses between
   * tokens. node-llama-cpp 3.22 keeps that lock for as long as any sequence has a decode queued, so
   * without the pause, erasing a used sequence for the next job waits until every other job ends.
   */
  private async withDecodePaused<T>(fn: () => Promise<T>): Promise<T> {
    if (this.pausers++ === 0) this.pause = new Promise((resolve) => (this.resume = resolve));
    try {
      return await fn();
    } finally {
      if (--this.pausers === 0) {
        this.resume?.();
        this.pause = undefined;
      }
    }
  }

  private async decode(slot: Slot, prompt: PreparedPrompt, grammar: LlamaGrammar | undefined, input: GenerateInput, end: DecodeEnd): Promise<GenerateOutput> {
    const { request, signal } = input;
    const model = this.model;
    const { sequence } = slot;
    const started = performance.now();
    const promptTokens = prompt.tokens;
    const room = this.contextSize - promptTokens.length;
    const budget = Math.min(request.max_tokens ?? room, room);
    const json = grammar !== undefined;
    // JSON may run past max_tokens to close what is open (see json-grammar.ts); never past the context.
    const limit = json ? room : budget;
    const closeAt = json ? closingStart(budget, room) : Number.POSITIVE_INFINITY;
    const minTokens = request.min_tokens ?? 0;
    const biases = minTokens > 0 || json ? this.tokenBiases() : undefined;

    // Stop strings: the job's (not for JSON, whose output must parse), the chat format's and the grammar's.
    const stopTexts: string[] = json ? [] : stopStrings(request.stop);
    const stopTokens = new Set<Token>();
    for (const trigger of [...prompt.stopTriggers, ...(grammar?.stopGenerationTriggers ?? [])]) {
      const t = LlamaText(trigger);
      if (t.values.every((v) => typeof v === 'string')) stopTexts.push(t.toString());
      else {
        const tokens = t.tokenize(model.tokenizer);
        if (tokens.length === 1 && tokens[0] !== undefined) stopTokens.add(tokens[0]);
      }
    }
    // A JSON answer's trailing whitespace (the grammar's stop trigger is newlines) is not part of it,
    // streamed or returned.
    const stops = new StopStringStream(stopTexts, (text) => input.onToken(text), { trimEnd: json });

    // Keep what the sequence already holds of this prompt (a shared system prompt is not decoded
    // again); erase the rest. The last prompt token is always decoded: its logits give the first token.
    const keep = promptTokens.slice(0, -1);
    if (sequence.compareContextTokens(keep).firstDifferentIndex < sequence.nextTokenIndex) {
      await this.withDecodePaused(() => sequence.adaptStateToTokens(keep, false));
    }
    if (signal.aborted) throw abortReason(signal);

    const generated: Token[] = [];
    let sampled = 0;
    let closing = false;
    const penalties = request.repeat_penalty !== undefined || request.presence_penalty !== undefined || request.frequency_penalty !== undefined;
    const nl = model.tokens.nl;
    const options: SequenceEvaluateOptions = {
      temperature: request.temperature ?? SAMPLING_DEFAULTS.temperature,
      topK: request.top_k ?? SAMPLING_DEFAULTS.top_k,
      topP: request.top_p ?? SAMPLING_DEFAULTS.top_p,
      minP: request.min_p ?? SAMPLING_DEFAULTS.min_p,
      // node-llama-cpp would seed from the clock in seconds: two jobs in one second would match.
      seed: request.seed ?? randomInt(0, 2 ** 32 - 1),
      yieldEogToken: true,
      // Called when the next token is sampled, i.e. after `sampled` tokens.
      tokenBias: () => {
        if (sampled >= closeAt) closing = true;
        if (biases === undefined) return this.noBias;
        if (sampled < minTokens) return closing ? biases.closingNoEog : biases.noEog;
        return closing ? biases.closing : this.noBias;
      },
      ...(grammar === undefined ? {} : { grammarEvaluationState: new LlamaGrammarEvaluationState({ model, grammar }) }),
      ...(penalties
        ? {
            repeatPenalty: {
              // The last 64 generated tokens, newlines excepted (llama.cpp's penalize_nl = false).
              punishTokens: () => generated.slice(-64).filter((t) => t !== nl),
              maxPunishTokens: 64,
              penalty: request.repeat_penalty ?? 1,
              presencePenalty: request.presence_penalty ?? 0,
              frequencyPenalty: request.frequency_penalty ?? 0,
            },
          }
        : {}),
    };

    let stopReason: 'eog' | 'stop' | 'length' = 'length';
    let pending: Token[] = [];
    // Text of the tokens not yet turned into text, given the tokens before them (a SentencePiece
    // token's leading space depends on what precedes it).
    const detokenizePending = () => {
      const before = generated.length - pending.length;
      const last = before >= 3 ? generated.slice(before - 3, before) : [...promptTokens.slice(-3), ...generated.slice(0, before)].slice(-3);
      return model.detokenize(pending, false, last);
    };
    const iterator = sequence.evaluate(promptTokens.slice(sequence.nextTokenIndex), options);
    /** A token was asked for and not yet received: llama.cpp is decoding it (or about to). */
    let asked = false;
    const requestNext = async (): Promise<IteratorResult<Token, void>> => {
      while (this.pause !== undefined) await this.pause;
      if (signal.aborted) throw abortReason(signal);
      asked = true;
      return iterator.next();
    };
    try {
      let next = sampled < limit ? await requestNext() : undefined;
      asked = false;
      while (next !== undefined && !next.done) {
        const token = next.value;
        sampled++;
        if (model.isEogToken(token) || stopTokens.has(token)) {
          stopReason = 'eog';
          break;
        }
        generated.push(token);
        pending.push(token);
        // Ask for the next token before working out this one's text: llama.cpp decodes while
        // JavaScript detokenizes, checks stop strings and streams, rather than after it. With every
        // sequence of the context waiting, node-llama-cpp hands the decode over within the
        // microtasks that follow; otherwise from an immediate that it sets in those microtasks,
        // after ours: the second turn lets that one run first. A stop string then costs one token
        // decoded in vain, after the answer (the sequence is released once that decode is done).
        const following = sampled < limit ? requestNext() : undefined;
        if (following !== undefined) {
          // Awaited below, after the text; an abort before the request must not go unhandled meanwhile.
          following.catch(() => undefined);
          await nextTurn();
          if (this.options.sequences > 1) await nextTurn();
        }
        const text = detokenizePending();
        // A character split over several byte tokens: wait for its other bytes (at most 4).
        if (!(text.endsWith('\uFFFD') && pending.length < 4 && following !== undefined)) {
          pending = [];
          // Nothing is streamed once the job is aborted.
          if (signal.aborted) throw abortReason(signal);
          if (stops.push(text)) {
            stopReason = 'stop';
            break;
          }
        }
        next = await following;
        asked = false;
      }
      if (pending.length > 0 && stopReason !== 'stop' && stops.push(detokenizePending())) stopReason = 'stop';
    } catch (err) {
      if (signal.aborted) throw abortReason(signal);
      if (this.closed) throw new LlmqError('ERR_WORKER_SHUTDOWN', `llama-cpp backend "${this.name}" closed during the job`, { cause: err });
      if (err instanceof LlmqError) throw err;
      throw new LlmqError('ERR_BACKEND_FAILED', `llama.cpp generation failed: ${(err as Error).message}`, { cause: err });
    } finally {
      // Ends the evaluation (and frees the sequence's evaluation lock) without decoding further.
      // With a token still being decoded, that waits for it: the answer does not.
      const stopped = iterator.return().then(() => undefined);
      if (!asked) await stopped;
      else end.drained = stopped.catch(() => undefined);
    }

    const completionTokens = stopReason === 'eog' ? sampled - 1 : sampled;
    const text = stops.finish();
    if (json) {
      if (stopReason === 'length') {
        throw new LlmqError(
          'ERR_BACKEND_CONTEXT_LENGTH',
          `the JSON answer did not close within the context (${this.contextSize} tokens per job); shorten the prompt or raise context_size`,
          { details: { prompt_tokens: promptTokens.length, completion_tokens: completionTokens } },
        );
      }
      try {
        JSON.parse(text);
      } catch (err) {
        throw new LlmqError('ERR_BACKEND_FAILED', `grammar-constrained output is not JSON: ${(err as Error).message}`, { cause: err });
      }
    }
    // Closing mode means the budget cut the answer short, even though the JSON was then closed.
    // Counted from the answer's own tokens (the last one sampled in closing mode when it came after
    // closeAt), not read from `closing`: the token asked for after the answer also sets that.
    const closed = json && sampled - 1 >= closeAt;
    const finish = stopReason === 'length' || closed ? 'length' : 'stop';
    input.logger.debug(
      {
        slot: slot.index,
        prompt_source: prompt.source,
        prompt_tokens: promptTokens.length,
        completion_tokens: completionTokens,
        stop_reason: stopReason,
        json_closing: closed,
        ms: Math.round(performance.now() - started),
      },
      'llama-cpp generation done',
    );
    return {
      text,
      finish_reason: finish,
      usage: { prompt_tokens: promptTokens.length, completion_tokens: completionTokens },
    };
  }
}
