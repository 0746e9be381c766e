/** A small typed event emitter: `on(type, handler)` returns the function that removes it. */

type Handler<E> = (event: E) => void;

export class Emitter<Events extends object> {
  private readonly handlers = new Map<keyof Events, Set<Handler<never>>>();

  on<K extends keyof Events>(type: K, handler: Handler<Events[K]>): () => void {
    let set = this.handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  off<K extends keyof Events>(type: K, handler: Handler<Events[K]>): void {
    this.handlers.get(type)?.delete(handler);
  }

  /** Calls every handler of `type`; a handler that throws does not stop the others or the client. */
  emit<K extends keyof Events>(type: K, event: Events[K]): void {
    const set = this.handlers.get(type);
    if (set === undefined) {
      return;
    }
    for (const handler of [...set]) {
      try {
        (handler as Handler<Events[K]>)(event);
      } catch (error) {
        // Rethrown outside the client's own stack, where the host reports it.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
