// Which seqs of a contact were accepted, for receipts, duplicates and gaps (§6 "Receipts and duplicates").
// Messages to a handle wait in a mailbox, and unconfirmed ones are sent again after every reconnect, so the same
// seq can arrive several times and a late one after a newer one. Pure.
//
// A record {through, extra, missing, floor}: every seq in (floor, through] was accepted except those in
// `missing`; `extra` holds the accepted seqs above `through + 1`, ascending, at most MAX_EXTRA of them. So a
// record never grows without bound however a server reorders: past MAX_EXTRA, `through` moves up to the lowest
// extra and the seqs still missing below it are *given up on*: kept as ranges in `missing` (at most
// MAX_MISSING_RANGES), so that when one of them does come it is shown (late) and receipted, never taken for a
// duplicate. Past MAX_MISSING_RANGES the oldest range is forgotten and `floor` moves up to its end: a seq at or
// below `floor` is *unknown* (accepted or given up, the record cannot tell any more), and is neither shown nor
// receipted, since a receipt must only ever confirm what was shown.

export const MAX_EXTRA = 256;
export const MAX_MISSING_RANGES = 64;

export const emptyReceived = () => ({ through: 0, extra: [], missing: [], floor: 0 });

function inMissing(received, seq) {
  return received.missing.some(([from, to]) => seq >= from && seq <= to);
}

export function wasAccepted(received, seq) {
  if (seq <= received.floor) return false;
  return (seq <= received.through && !inMissing(received, seq)) || received.extra.includes(seq);
}

/**
 * What `seq` is for a contact with record `received`: 'duplicate' (accepted before), 'in_order' (the next one),
 * 'late' (below the highest accepted, never accepted: it fills a gap, maybe one given up on), 'gap' (beyond
 * the next one; `missing` seqs between are not here yet) or 'unknown' (at or below `floor`).
 */
export function classifyReceived(received, seq) {
  if (seq <= received.floor) return { kind: 'unknown', missing: 0 };
  if (inMissing(received, seq)) return { kind: 'late', missing: 0 };
  if (wasAccepted(received, seq)) return { kind: 'duplicate', missing: 0 };
  if (seq === received.through + 1) return { kind: 'in_order', missing: 0 };
  const highest = received.extra.length ? received.extra[received.extra.length - 1] : received.through;
  if (seq < highest) return { kind: 'late', missing: 0 };
  return { kind: 'gap', missing: seq - highest - 1 };
}

/** `record` with at most MAX_MISSING_RANGES ranges given up on: the oldest are forgotten below `floor`. */
function bounded(record) {
  if (record.missing.length <= MAX_MISSING_RANGES) return record;
  const forgotten = record.missing.slice(0, record.missing.length - MAX_MISSING_RANGES);
  return { ...record, missing: record.missing.slice(-MAX_MISSING_RANGES), floor: forgotten[forgotten.length - 1][1] };
}

/** The record with `seq` accepted (a seq given up on is taken out of its range; an unknown one changes nothing). */
export function accept(received, seq) {
  if (seq <= received.floor || wasAccepted(received, seq)) return received;
  if (inMissing(received, seq)) {
    const missing = received.missing.flatMap(([from, to]) => (seq < from || seq > to ? [[from, to]]
      : [[from, seq - 1], [seq + 1, to]].filter(([a, b]) => a <= b)));
    return bounded({ ...received, missing });
  }
  let { through } = received;
  let extra = [...received.extra, seq].sort((a, b) => a - b);
  const missing = [...received.missing];
  while (extra.length && extra[0] <= through + 1) {
    through = Math.max(through, extra[0]);
    extra = extra.slice(1);
  }
  while (extra.length > MAX_EXTRA) {
    if (extra[0] > through + 1) missing.push([through + 1, extra[0] - 1]);
    through = extra[0];
    extra = extra.slice(1);
    while (extra.length && extra[0] === through + 1) {
      through = extra[0];
      extra = extra.slice(1);
    }
  }
  return bounded({ through, extra, missing, floor: received.floor });
}

/** The seqs `received` holds as accepted above its floor, as ascending intervals [from, to]. */
function acceptedIntervals(received) {
  const out = [];
  let start = received.floor + 1;
  for (const [from, to] of received.missing) {
    if (from > start) out.push([start, from - 1]);
    start = to + 1;
  }
  if (start <= received.through) out.push([start, received.through]);
  for (const seq of received.extra) out.push([seq, seq]);
  return out;
}

/** `ranges` without the seqs of `cut` (both lists of [from, to]). */
function without(ranges, cut) {
  let out = ranges;
  for (const [c, d] of cut) {
    out = out.flatMap(([a, b]) => (d < a || c > b ? [[a, b]] : [[a, c - 1], [d + 1, b]].filter(([x, y]) => x <= y)));
  }
  return out;
}

/**
 * Two records of one contact merged (an imported book): a seq is accepted when either accepted it. Unknown
 * below the higher of the two floors, so the merge never makes a seq look new that one of them had accepted.
 */
export function mergeReceived(a, b) {
  const [high, low] = a.through >= b.through ? [a, b] : [b, a];
  const floor = Math.max(a.floor, b.floor);
  const missing = without(high.missing.map(([from, to]) => [Math.max(from, floor + 1), to]).filter(([from, to]) => from <= to),
    acceptedIntervals(low));
  let record = { through: Math.max(high.through, floor), extra: high.extra.filter((seq) => seq > floor), missing, floor };
  for (const seq of low.extra) if (seq > record.through) record = accept(record, seq);
  return bounded(record);
}

const isSeq = (n) => Number.isSafeInteger(n) && n >= 1;

/** The ranges given up on of a stored record, or null unless ascending, disjoint and in (floor, through]. */
function checkedMissing(ranges, floor, through) {
  if (!Array.isArray(ranges) || ranges.length > MAX_MISSING_RANGES) return null;
  let last = floor;
  for (const range of ranges) {
    if (!Array.isArray(range) || range.length !== 2 || !range.every(isSeq) || range[0] <= last || range[1] < range[0] || range[1] > through) return null;
    last = range[1];
  }
  return ranges.map(([from, to]) => [from, to]);
}

/**
 * A record read from storage (a record without `missing` and `floor` has none). One whose `through` or `extra`
 * is not well formed is empty; one whose `missing` or `floor` is not has every seq up to `through` unknown, so
 * that nothing it may have accepted is ever shown again.
 */
export function checkedReceived(value) {
  if (!value || !Number.isSafeInteger(value.through) || value.through < 0 || !Array.isArray(value.extra)) return emptyReceived();
  const { through } = value;
  const extra = [...new Set(value.extra)].filter((n) => Number.isSafeInteger(n) && n > through + 1).sort((a, b) => a - b).slice(0, MAX_EXTRA);
  const floor = value.floor === undefined ? 0 : value.floor;
  const missing = Number.isSafeInteger(floor) && floor >= 0 && floor <= through
    ? checkedMissing(value.missing === undefined ? [] : value.missing, floor, through) : null;
  return missing ? { through, extra, missing, floor } : { through, extra, missing: [], floor: through };
}
