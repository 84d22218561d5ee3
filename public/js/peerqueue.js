// Ordering of server events. Events about one peer ID are applied strictly in arrival order (a friend's
// messages: `seq`; a request before its cancellation; an acceptance before the messages that follow it).
// Events about different peers do not wait for each other, so a slow key check, or thousands of them, never
// hold up a friend's message. Pure: no DOM.

/**
 * @param {(error: unknown) => void} onError  called when a task throws; the peer's later tasks still run
 * @returns {{run: (peer: string, task: () => unknown) => Promise<void>, readonly pending: number}}
 */
export function createPeerQueue(onError) {
  const tails = new Map(); // peer -> promise of its latest task; deleted once that task is done

  function run(peer, task) {
    const previous = tails.get(peer) || Promise.resolve();
    const done = previous.then(task).catch(onError);
    tails.set(peer, done);
    return done.then(() => {
      if (tails.get(peer) === done) tails.delete(peer);
    });
  }

  return {
    run,
    /** Peers with work queued or running. */
    get pending() { return tails.size; },
  };
}
