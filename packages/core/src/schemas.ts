import { z } from 'zod';

/** A chat message. `content` is plain text. */
export const messageSchema = z.strictObject({
  role: z.enum(['system', 'user', 'assistant']),
  content: z.string().max(1_000_000),
});
export type Message = z.infer<typeof messageSchema>;

/** Whether `value` nests arrays and objects more than `limit` levels deep (walked without recursion). */
export function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth + 1 > limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

/**
 * A JSON object of the caller's, at most `limit` levels deep: deeper ones are refused rather than
 * left to overflow the stack of whatever walks them later (hashing, grammars), a 500.
 */
const jsonObject = (limit: number) =>
  z.record(z.string(), z.unknown()).refine((v) => !nestsDeeperThan(v, limit), `nests more than ${limit} levels of objects and arrays`);

export const MAX_METADATA_DEPTH = 32;
export const MAX_SCHEMA_DEPTH = 64;

export const responseFormatSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('text') }),
  z.strictObject({ type: z.literal('json_object') }),
  z.strictObject({
    type: z.literal('json_schema'),
    json_schema: z.strictObject({
      name: z.string().max(128).optional(),
      description: z.string().optional(),
      schema: jsonObject(MAX_SCHEMA_DEPTH),
      strict: z.boolean().optional(),
    }),
  }),
]);
export type ResponseFormat = z.infer<typeof responseFormatSchema>;

/** Stop strings a request may give, and how long each may be. */
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_LENGTH = 500;
const STOP_ALLOWED = `a string or an array of at most ${MAX_STOP_STRINGS} strings, each 1 to ${MAX_STOP_LENGTH} characters`;

function describeStop(input: unknown): string {
  const kind = (v: unknown) => (v === null ? 'null' : typeof v === 'object' ? 'an object' : `a ${typeof v}`);
  if (!Array.isArray(input)) return kind(input);
  const odd: unknown[] = input.filter((v) => typeof v !== 'string');
  return odd.length > 0 ? `an array holding ${kind(odd[0])}` : `an array of ${input.length}`;
}

const stopSchema = z.union([z.string().min(1).max(MAX_STOP_LENGTH), z.array(z.string().min(1).max(MAX_STOP_LENGTH)).max(MAX_STOP_STRINGS)], {
  // zod's own message for a union is "Invalid input": say what is allowed and what came.
  error: (issue) => `must be ${STOP_ALLOWED} (got ${describeStop(issue.input)})`,
});

/**
 * Generation parameters shared by every front door. Backends declare which of them they honour;
 * the gateway rejects a job that sets one its model's backend does not support.
 */
export const generationParamsShape = {
  max_tokens: z.int().min(1).max(1_000_000).optional(),
  min_tokens: z.int().min(0).max(1_000_000).optional(),
  temperature: z.number().min(0).max(2).optional(),
  // 0 keeps only the most likely token (greedy), as OpenAI and llama.cpp take it.
  top_p: z.number().min(0).max(1).optional(),
  top_k: z.int().min(0).max(100_000).optional(),
  min_p: z.number().min(0).max(1).optional(),
  seed: z.int().min(0).max(2 ** 32 - 1).optional(),
  stop: stopSchema.optional(),
  // llama.cpp divides logits by it: 0 (or less) wrecks the output rather than turning it off.
  repeat_penalty: z.number().gt(0, 'must be greater than 0 (1 = no penalty, above 1 discourages repeats)').max(10).optional(),
  presence_penalty: z.number().min(-2).max(2).optional(),
  frequency_penalty: z.number().min(-2).max(2).optional(),
  response_format: responseFormatSchema.optional(),
};

/** Names of the generation parameters, for capability checks. */
export const GENERATION_PARAMS = Object.keys(generationParamsShape) as (keyof typeof generationParamsShape)[];
export type GenerationParam = (typeof GENERATION_PARAMS)[number];

/**
 * Lowest BullMQ priority number is served first; llmq exposes 1 (most urgent) … 1,000,000.
 */
export const MAX_PRIORITY = 1_000_000;

/** The body of `POST /v1/jobs` (and each item of a batch). */
export const jobRequestSchema = z
  .strictObject({
    model: z.string().min(1).max(200),
    prompt: z.string().max(4_000_000).optional(),
    messages: z.array(messageSchema).min(1).max(10_000).optional(),
    /** A named prompt template from `config/templates/` (backends that render prompts themselves). */
    template: z.string().min(1).max(200).regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only').optional(),
    ...generationParamsShape,
    priority: z.int().min(1).max(MAX_PRIORITY).optional(),
    timeout_ms: z.int().min(1).max(86_400_000).optional(),
    metadata: jsonObject(MAX_METADATA_DEPTH).optional(),
    idempotency_key: z.string().min(1).max(255).optional(),
  })
  .superRefine((value, ctx) => {
    if (value.prompt === undefined && value.messages === undefined) {
      ctx.addIssue({ code: 'custom', path: ['prompt'], message: 'either "prompt" or "messages" is required' });
    } else if (value.prompt !== undefined && value.messages !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['messages'], message: 'give "prompt" or "messages", not both' });
    }
    if (value.min_tokens !== undefined && value.max_tokens !== undefined && value.min_tokens > value.max_tokens) {
      ctx.addIssue({ code: 'custom', path: ['min_tokens'], message: `${value.min_tokens} is more than max_tokens (${value.max_tokens}); min_tokens must not exceed max_tokens` });
    }
  });

export type JobRequest = z.infer<typeof jobRequestSchema>;

/** What a backend is asked to run: the request less its queueing fields. */
export type GenerationRequest = Omit<JobRequest, 'priority' | 'idempotency_key' | 'metadata'> & {
  metadata?: Record<string, unknown> | undefined;
};

export const finishReasonSchema = z.enum(['stop', 'length', 'cancelled', 'error']);
export type FinishReason = z.infer<typeof finishReasonSchema>;

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Where a job came from, so sinks can write back and DLQ entries can be traced. */
export interface SourceRef {
  /** Adapter type, e.g. `http`, `mongodb`, `pulsar`. */
  type: string;
  /** Adapter instance name from config (absent for HTTP). */
  name?: string | undefined;
  /** Source-specific reference (document id, message id, …). */
  ref?: Record<string, unknown> | undefined;
}

export interface JobTimings {
  created_at: number;
  started_at?: number | undefined;
  first_token_at?: number | undefined;
  completed_at?: number | undefined;
}

/** The result of a completed job, as stored on the job and returned by the API. */
export interface JobResult {
  text: string;
  finish_reason: FinishReason;
  usage: Usage;
  /** Model that produced the result (differs from the request's model after a fallback). */
  model: string;
  started_at: number;
  first_token_at?: number | undefined;
  completed_at: number;
  worker?: string | undefined;
}

/** What llmq keeps in BullMQ's `job.data`. */
export interface JobData {
  request: GenerationRequest;
  created_at: number;
  source?: SourceRef | undefined;
  /** Id of the API key that enqueued it (never the key itself). */
  key_id?: string | undefined;
  /** Generated result kept before sink writes, so a failed sink write does not regenerate. */
  result?: JobResult | undefined;
  /** Names of sinks that already committed this result. */
  sinks_done?: string[] | undefined;
  /**
   * The `details` of the error the job failed with for good, and when its last attempt produced
   * its first token (a job cancelled or timed out mid-answer). BullMQ keeps only the failure's
   * message (`failedReason`); `reason` is that message, so these are shown only beside it.
   */
  failure?: { reason: string; details?: Record<string, unknown> | undefined; first_token_at?: number | undefined } | undefined;
}

/** A failed job's error as the API shows it. `details` is what the thrower attached, if anything. */
export interface JobError {
  message: string;
  code: string;
  details?: Record<string, unknown> | undefined;
}

export const JOB_STATUSES = ['queued', 'active', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** The job as `GET /v1/jobs/:id` returns it. */
export interface JobView {
  id: string;
  object: 'job';
  model: string;
  status: JobStatus;
  result: Pick<JobResult, 'text' | 'finish_reason' | 'usage' | 'model'> | null;
  error: JobError | null;
  attempts: number;
  max_attempts: number;
  priority: number | null;
  source: SourceRef | null;
  metadata: Record<string, unknown> | null;
  created_at: number;
  started_at: number | null;
  first_token_at: number | null;
  completed_at: number | null;
  /**
   * While active: how much text the running attempt has generated (UTF-16 code units, as
   * JavaScript counts; it starts again from 0 when a fallback model starts over), stored every
   * 2 s or so once the job has run 2 s (absent before that, and once the job is no longer active).
   */
  progress?: { generated_chars: number; updated_at: number } | undefined;
  /**
   * While active: present (a sentence) when no worker holds the job's lock any more, i.e. its
   * worker died or lost Redis. The next stalled check (every `queue.stalled_interval_ms`) queues
   * it again.
   */
  warning?: string | undefined;
}

/** Events streamed from workers to `GET /v1/jobs/:id/events`. */
export type JobEvent =
  | { type: 'status'; status: JobStatus; attempt?: number; worker?: string; at: number }
  | { type: 'token'; text: string; index: number; /** Characters of output before this text. */ offset: number }
  | { type: 'completed'; result: JobResult }
  | { type: 'failed'; error: JobError; attempt: number; will_retry: boolean }
  | { type: 'cancelled'; at: number };
