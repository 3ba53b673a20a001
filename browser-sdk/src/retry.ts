/**
 * Retries of uploads: network failures, `429` and `5xx` are tried again with exponential backoff
 * and full jitter, honouring `Retry-After`; any other answer is final.
 */

export interface RetryPolicy {
  attempts: number;
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseMs: 500, maxMs: 8000 };

/** Whether an answer with `status` may succeed when sent again. */
export function isRetryable(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** Milliseconds named by a `Retry-After` header (seconds or an HTTP date), or `null`. */
export function retryAfterMs(header: string | null, now: number = Date.now()): number | null {
  if (header === null || header.trim() === "") return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** The wait before attempt `attempt` (1 for the first retry). */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export interface AttemptHooks {
  /** Called before each retry with the attempt number and the wait. */
  onRetry?: (attempt: number, waitMs: number) => void;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  /** Whether an answer is worth another attempt; by default {@link isRetryable} of its status. */
  shouldRetry?: (response: Response) => boolean | Promise<boolean>;
}

const sleepFor = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Sends `request` until it answers something final. A network failure (the promise rejects)
 * is retried like a `503`; after the last attempt the last answer is returned, or the error thrown.
 */
export async function withRetry(
  request: (attempt: number) => Promise<Response>,
  policy: RetryPolicy,
  hooks: AttemptHooks = {},
): Promise<Response> {
  const sleep = hooks.sleep ?? sleepFor;
  for (let attempt = 0; ; attempt++) {
    let response: Response | undefined;
    let failure: unknown;
    try {
      response = await request(attempt);
    } catch (error) {
      failure = error;
    }
    const last = attempt + 1 >= policy.attempts;
    const shouldRetry = hooks.shouldRetry ?? ((answer: Response) => isRetryable(answer.status));
    if (response !== undefined && (last || !(await shouldRetry(response)))) return response;
    if (response === undefined && last) throw failure;
    const told = response ? retryAfterMs(response.headers.get("retry-after")) : null;
    const wait = Math.min(policy.maxMs, told ?? backoffMs(attempt + 1, policy, hooks.random));
    hooks.onRetry?.(attempt + 1, wait);
    await sleep(wait);
  }
}
