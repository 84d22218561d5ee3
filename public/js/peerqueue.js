// Ordering of server events. Events about one peer ID are applied strictly in arrival order (a friend's
// messages: `seq`; a request before its cancellation; an acceptance before the messages that follow it).
// Events about different peers do not wait for each other, so a slow key check, or thousands of them, never
// hold up a friend's message. Pure: no DOM; the wiring hands drop reports to the domain (`framesDropped`).
//
// Bounded: a lying server can send any number of frames "from" one ID, each taking up to the crypto worker's
// budget, so at most MAX_QUEUED_PER_PEER tasks per ID (and MAX_QUEUED_TOTAL in all) wait or run; beyond,
// a task is dropped unrun and counted, and the count is reported at most once per DROP_REPORT_EVERY_MS per ID.

/** Tasks one peer ID may have waiting or running. An honest server's frames are handled in milliseconds. */
export const MAX_QUEUED_PER_PEER = 256;
/** Tasks all peers together may have waiting or running. */
export const MAX_QUEUED_TOTAL = 4096;
/** Drops are gathered this long before the first report for an ID, so a burst makes one report... */
export const DROP_GATHER_MS = 1000;
/** ...and reported at most this often per ID. */
export const DROP_REPORT_EVERY_MS = 10000;

/**
 * @param {(error: unknown) => void} onError  called when a task throws; the peer's later tasks still run
 * @param {object} [options]
 * @param {(peer: string, count: number) => void} [options.onDropped]  tasks dropped for `peer` since the last report
 * @returns {{run: (peer: string, task: () => unknown) => Promise<boolean>, readonly pending: number, readonly queued: number}}
 */
export function createPeerQueue(onError, {
  onDropped = () => {}, maxPerPeer = MAX_QUEUED_PER_PEER, maxTotal = MAX_QUEUED_TOTAL,
  gatherMs = DROP_GATHER_MS, reportEveryMs = DROP_REPORT_EVERY_MS,
} = {}) {
  const tails = new Map(); // peer -> {done: promise of its latest task, count: its tasks waiting or running}
  let total = 0;
  const drops = new Map(); // peer -> {count: dropped since the last report, timer, lastAt: when last reported}

  /** Queues `task` behind `peer`'s earlier ones; resolves true when it ran, false when it was dropped. */
  function run(peer, task) {
    const tail = tails.get(peer);
    if ((tail && tail.count >= maxPerPeer) || total >= maxTotal) {
      dropped(peer);
      return Promise.resolve(false);
    }
    const entry = tail || { done: Promise.resolve(), count: 0 };
    const done = entry.done.then(task).catch(onError);
    entry.done = done;
    entry.count += 1;
    total += 1;
    tails.set(peer, entry);
    return done.then(() => {
      entry.count -= 1;
      total -= 1;
      if (entry.count === 0 && tails.get(peer) === entry) tails.delete(peer);
      return true;
    });
  }

  function dropped(peer) {
    let drop = drops.get(peer);
    if (!drop) {
      drop = { count: 0, timer: null, lastAt: -Infinity };
      drops.set(peer, drop);
    }
    drop.count += 1;
    if (drop.timer) return;
    const wait = Math.max(gatherMs, drop.lastAt + reportEveryMs - Date.now());
    drop.timer = setTimeout(() => {
      const { count } = drop;
      drop.count = 0;
      drop.timer = null;
      drop.lastAt = Date.now();
      // Forgotten once its window is over, so the map holds only peers reported on recently.
      setTimeout(() => {
        if (drops.get(peer) === drop && !drop.timer) drops.delete(peer);
      }, reportEveryMs);
      onDropped(peer, count);
    }, wait);
  }

  return {
    run,
    /** Peers with work queued or running. */
    get pending() { return tails.size; },
    /** Tasks queued or running, all peers together. */
    get queued() { return total; },
  };
}
