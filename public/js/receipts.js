// Which seqs of a contact were accepted, for receipts, duplicates and gaps (§6 "Receipts and duplicates").
// Messages to a handle wait in a mailbox, and unconfirmed ones are sent again after every reconnect, so the same
// seq can arrive several times and a late one after a newer one. Pure.
//
// Invariant of a record {through, extra}: every seq ≤ `through` was accepted (or given up on, see below), `extra`
// holds the accepted seqs above `through + 1`, ascending, at most MAX_EXTRA of them. So a record never grows
// without bound however a server reorders: past MAX_EXTRA, `through` moves up to the lowest extra and the seqs
// still missing below it are given up on (they would then count as duplicates).

export const MAX_EXTRA = 256;

export const emptyReceived = () => ({ through: 0, extra: [] });

export function wasAccepted(received, seq) {
  return seq <= received.through || received.extra.includes(seq);
}

/**
 * What `seq` is for a contact with record `received`: 'duplicate' (accepted before), 'in_order' (the next one),
 * 'late' (below the highest accepted, never accepted: it fills a gap) or 'gap' (beyond the next one; `missing`
 * seqs between are not here yet).
 */
export function classifyReceived(received, seq) {
  if (wasAccepted(received, seq)) return { kind: 'duplicate', missing: 0 };
  if (seq === received.through + 1) return { kind: 'in_order', missing: 0 };
  const highest = received.extra.length ? received.extra[received.extra.length - 1] : received.through;
  if (seq < highest) return { kind: 'late', missing: 0 };
  return { kind: 'gap', missing: seq - highest - 1 };
}

/** The record with `seq` accepted. */
export function accept(received, seq) {
  if (wasAccepted(received, seq)) return received;
  let through = received.through;
  let extra = [...received.extra, seq].sort((a, b) => a - b);
  if (seq === through + 1) through = seq;
  while (extra.length && extra[0] <= through + 1) {
    through = Math.max(through, extra[0]);
    extra = extra.slice(1);
  }
  while (extra.length > MAX_EXTRA) {
    through = extra[0];
    extra = extra.slice(1);
    while (extra.length && extra[0] === through + 1) {
      through = extra[0];
      extra = extra.slice(1);
    }
  }
  return { through, extra };
}

/** A record read from storage, or an empty one when it is not well formed. */
export function checkedReceived(value) {
  if (!value || !Number.isSafeInteger(value.through) || value.through < 0 || !Array.isArray(value.extra)) return emptyReceived();
  const extra = [...new Set(value.extra)].filter((n) => Number.isSafeInteger(n) && n > value.through + 1).sort((a, b) => a - b);
  return { through: value.through, extra: extra.slice(0, MAX_EXTRA) };
}
