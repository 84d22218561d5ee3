// The page's side of the crypto worker (cryptoworker.js). A lane is one worker with a queue: one job at a
// time, each with a time budget. A job that overruns it is refused (`too_slow`), the worker is terminated
// (whatever it was computing stops with it) and the next job gets a fresh one. So the cost of any single key or
// payload to the page is bounded by the budget, and the main thread never computes on them at all.
//
// A job's budget starts when its worker is ready: loaded (it says so) and, for a lane with an `init` job, done
// with it. Starting a worker (spawning it, loading OpenPGP.js, reading the user's key) is not the job's doing,
// and on a slow phone could take longer than a budget: counted against the job after every restart, it would
// make each next job overrun too. Start-up has its own, longer budget.

import { MAX_PUBLIC_KEY_BYTES, byteCount, checkArmoredSize } from './keypolicy.js';

const WORKER_URL = new URL('./cryptoworker.js', import.meta.url);

/** Honest jobs take milliseconds (a key check, a message): seconds mean a crafted input or a stuck worker. */
export const JOB_BUDGET_MS = 5000;
/** A worker not ready this long after it was started (or given a new `init`) is replaced. */
export const STARTUP_BUDGET_MS = 30000;

/** A refused job: `code` is the worker's KeyError code, `too_slow`, or `worker_failed`. */
export class CryptoError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'CryptoError';
    this.code = code;
  }
}

/**
 * @param {object} options
 * @param {string} options.name  the worker's name (shown in the browser's devtools)
 * @param {number} [options.budgetMs]  default budget per job, measured from when the worker is given the job
 *   and is ready (a job posted to a worker still starting waits for it first)
 * @param {number} [options.startupMs]  how long a worker may take to be ready
 */
export function createLane({
  name, budgetMs = JOB_BUDGET_MS, startupMs = STARTUP_BUDGET_MS, url = WORKER_URL, WorkerImpl = globalThis.Worker,
}) {
  let worker = null;
  let init = null; // {op, args}: posted first to every new worker (the user's key)
  const queue = []; // {op, args, budgetMs, resolve, reject}, in submission order
  let current = null; // {id, job, timer}: the one job the worker has; timer null until the worker is ready
  let nextId = 1;
  let restarts = 0;
  let loaded = false; // the worker said it is loaded
  let initPending = false; // an `init` was posted and not answered yet
  let startupTimer = null;

  function spawn() {
    worker = new WorkerImpl(url, { type: 'module', name });
    worker.onmessage = (event) => received(event.data);
    // Only a worker that could not load (or threw outside a job) gets here: the job it had is lost with it.
    worker.onerror = (event) => {
      event.preventDefault();
      replace(new CryptoError('worker_failed', 'The crypto worker failed.'));
    };
    loaded = false;
    initPending = false;
    if (init) postInit();
    else startingUp();
  }

  function postInit() {
    initPending = true;
    worker.postMessage({ id: 0, ...init });
    startingUp();
  }

  function isReady() {
    return loaded && !initPending;
  }

  /** The worker is not ready yet: jobs wait for it without spending their budget, within the start-up budget. */
  function startingUp() {
    clearTimeout(startupTimer);
    startupTimer = setTimeout(() => replace(new CryptoError('worker_failed', 'The crypto worker did not start.')), startupMs);
  }

  function startBudget() {
    if (!current || current.timer || !isReady()) return;
    const { job } = current;
    current.timer = setTimeout(() => replace(new CryptoError('too_slow', `took longer than ${job.budgetMs / 1000} s`)), job.budgetMs);
  }

  function pump() {
    if (current || queue.length === 0) return;
    const job = queue.shift();
    if (!worker) spawn();
    const id = nextId++;
    current = { id, job, timer: null };
    worker.postMessage({ id, op: job.op, args: job.args });
    startBudget();
  }

  function received(data) {
    if (data && data.ready === true) {
      loaded = true;
    } else if (data && data.id === 0) {
      // The answer to `init` needs none: a failed init shows up as failing jobs.
      initPending = false;
    } else {
      settle(data);
      return;
    }
    if (isReady()) {
      clearTimeout(startupTimer);
      startupTimer = null;
      startBudget();
    }
  }

  function settle({ id, ok, result, error }) {
    if (!current || id !== current.id) return;
    const { job, timer } = current;
    clearTimeout(timer);
    current = null;
    if (ok) job.resolve(result);
    else job.reject(new CryptoError(error.code, error.message));
    pump();
  }

  /** Ends the worker with the job it holds (refused with `error`); queued jobs go to a new worker. */
  function replace(error) {
    clearTimeout(startupTimer);
    startupTimer = null;
    if (worker) {
      worker.onmessage = null;
      worker.onerror = null;
      worker.terminate();
      worker = null;
      restarts += 1;
    }
    if (current) {
      clearTimeout(current.timer);
      current.job.reject(error);
      current = null;
    }
    pump();
  }

  return {
    /** Queues a job; resolves with its result, rejects with a CryptoError. */
    run(op, args, { budgetMs: budget = budgetMs } = {}) {
      return new Promise((resolve, reject) => {
        queue.push({ op, args, budgetMs: budget, resolve, reject });
        pump();
      });
    },
    /** Sets the job every worker of this lane starts with, and starts one now so the first real job is quick. */
    setInit(op, args) {
      init = { op, args };
      if (worker) postInit();
      else spawn();
    },
    /** Starts the worker ahead of the first job (loading OpenPGP.js takes a moment). */
    warm() {
      if (!worker) spawn();
    },
    /** How often a worker was terminated (overrun or failure): for tests and diagnostics. */
    get restarts() { return restarts; },
  };
}

/**
 * The two lanes the app uses. Friends' keys come from anyone who knows our ID; payloads only from friends
 * (or a lying server). Separate workers, so a flood of requests never delays a friend's message.
 */
export function createCrypto({ budgetMs = JOB_BUDGET_MS } = {}) {
  const keyLane = createLane({ name: 'secchat-keys', budgetMs });
  const messageLane = createLane({ name: 'secchat-messages', budgetMs });
  return {
    /** Gives the message worker the user's unlocked key (kept for restarts) and warms both workers up. */
    start(privateBinary) {
      messageLane.setInit('init', { privateBinary });
      keyLane.warm();
    },
    /** {fingerprint, userId, keyIds} of a usable friend's key; rejects with the reason it is not. */
    readFriendKey(armored) {
      // Checked here, before the text is copied to the worker: only keys the server could have accepted go there.
      const refused = refuseUnsent(armored);
      return refused ? Promise.reject(refused) : keyLane.run('readFriendKey', { armored });
    },
    /** The armored payload: the envelope text encrypted to the friend's key and signed with ours. */
    seal: (envelopeText, friendArmored) => messageLane.run('seal', { envelopeText, friendArmored }),
    /** keys.openPayload's answer for a payload from the friend with this key. */
    open: (payload, friendArmored) => messageLane.run('open', { payload, friendArmored }),
    /** A group message: the envelope text encrypted once to every key of `armoredKeys`, signed with ours. */
    sealMany: (envelopeText, armoredKeys) => messageLane.run('sealMany', { envelopeText, armoredKeys }),
    /** keys.openGroupPayload's answer: the payload decrypted, with its signatures' key IDs (groupopen.js). */
    openGroup: (payload) => messageLane.run('openGroup', { payload }),
    /** keys.verifyGroupPayload's answer for the one member's key `signer` ({fingerprint, armored}). */
    verifyGroup: (payload, sessionKeys, { fingerprint, armored }) => messageLane.run('verifyGroup', { payload, sessionKeys, fingerprint, armored }),
    lanes: { keys: keyLane, messages: messageLane },
  };
}

/**
 * Why a friend's armored key is refused without reading it (not text, or over the size the server accepts, as
 * keys.readFriendKey says it too), or null. Cheap: a text over 1 MiB is measured by its length only.
 */
export function refuseUnsent(armored) {
  if (typeof armored !== 'string') return new CryptoError('not_a_key', 'The friend sent something that is not a readable OpenPGP public key.');
  const size = checkArmoredSize(armored);
  if (size.ok) return null;
  return new CryptoError('key_too_large', `This key is ${byteCount(size.bytes)}; SecChat accepts keys of at most ${byteCount(MAX_PUBLIC_KEY_BYTES)}.`);
}
