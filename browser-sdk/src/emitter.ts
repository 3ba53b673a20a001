/** A small typed event emitter: `on` returns the function that removes the handler. */
export class Emitter<E> {
  private readonly handlers = new Map<keyof E, Set<(payload: never) => void>>();

  on<K extends keyof E>(event: K, handler: (payload: E[K]) => void): () => void {
    const set = this.handlers.get(event) ?? new Set();
    set.add(handler as (payload: never) => void);
    this.handlers.set(event, set);
    return () => set.delete(handler as (payload: never) => void);
  }

  emit<K extends keyof E>(event: K, payload: E[K]): void {
    for (const handler of this.handlers.get(event) ?? []) {
      try {
        (handler as (payload: E[K]) => void)(payload);
      } catch (error) {
        // A failing listener must not stop the capture.
        console.error(`idyntra: a "${String(event)}" listener threw`, error);
      }
    }
  }

  clear(): void {
    this.handlers.clear();
  }
}
