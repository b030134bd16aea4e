import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { LlmqError } from '@llmq/core';

export interface AuthOptions {
  keys: readonly string[];
  publicPaths: readonly string[];
  /** Answer with a Basic-auth challenge (browsers, for Bull Board). */
  challengePaths?: readonly string[];
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** A short stable id for an API key: safe to log and to store on jobs. */
export function keyId(key: string): string {
  return `key_${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

function presented(req: Request): string | undefined {
  const header = req.get('authorization');
  if (header) {
    const [scheme, value] = header.split(' ', 2);
    if (scheme?.toLowerCase() === 'bearer' && value) return value.trim();
    if (scheme?.toLowerCase() === 'basic' && value) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      return colon >= 0 ? decoded.slice(colon + 1) : decoded;
    }
  }
  return req.get('x-api-key') ?? undefined;
}

declare module 'express-serve-static-core' {
  interface Request {
    keyId?: string;
  }
}

/** API-key check (Bearer, x-api-key, or Basic with the key as password); no keys configured = open. */
export function apiKeyAuth(options: AuthOptions) {
  const keys = options.keys.map((k) => ({ hash: digest(k), id: keyId(k) }));
  return (req: Request, res: Response, next: NextFunction) => {
    if (keys.length === 0 || options.publicPaths.includes(req.path)) return next();
    const key = presented(req);
    if (key !== undefined) {
      const h = digest(key);
      const match = keys.find((k) => timingSafeEqual(k.hash, h));
      if (match) {
        req.keyId = match.id;
        return next();
      }
    }
    if (options.challengePaths?.some((p) => req.originalUrl.startsWith(p))) res.set('WWW-Authenticate', 'Basic realm="llmq", charset="UTF-8"');
    next(new LlmqError('ERR_AUTH_REQUIRED', key === undefined ? 'missing API key: send "Authorization: Bearer <key>"' : 'invalid API key'));
  };
}
