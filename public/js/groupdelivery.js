// How many members have each of our group messages (PROTOCOL §6 "Groups", `greceipt`), as a pure reducer.
// "Delivered to 3 of 5" counts signed receipts only, never the server's ACK (its `sent`/`queued` say where
// copies went, not who read them), and only from members the message was sent to: a receipt from anyone
// else changes nothing.
//
// The server's UNDELIVERED for one copy of an upload (PROTOCOL §11: refused at once, or dropped from the mailbox
// later) marks that member as not reached, until its receipt comes after all or the message is sent again.
//
// State: {messages: [{seq, to: [fps], have: [fps], unreached: [fps]}]}, oldest first, at most MAX_TRACKED
// messages (the oldest is forgotten first); `to` holds at most 63 fingerprints (the other members of a
// version), `have` ⊆ `to`, `unreached` ⊆ `to` and disjoint from `have`.

export const MAX_TRACKED = 256;

export const emptyDeliveries = () => ({ messages: [] });

/**
 * The next state after `event`:
 * - {type:'sent', seq, to}: the message `seq` is for the members `to` (fingerprints: the other members of its
 *   version, also when a resend goes to the handles of only some of them). Sent again with the same
 *   seq (a resend, maybe under a later version of the list), `to` becomes the new recipients and who had it
 *   already still counts when they are among them.
 * - {type:'receipt', from, acks}: member `from` confirmed the seqs `acks` (a verified `greceipt`).
 * - {type:'undelivered', seq, to}: the server reported the copy of message `seq` for member `to` undelivered
 *   (UNDELIVERED with the upload's ref, its handle being `to`'s); a receipt from `to` still wins.
 * - {type:'forget', seq}: the message is no longer followed (deleted, or the group left).
 * Returns the same state when nothing changed.
 */
export function deliveries(state, event) {
  switch (event.type) {
    case 'sent': {
      const to = [...new Set(event.to)];
      const earlier = state.messages.find((m) => m.seq === event.seq);
      // A new attempt: who was not reached before may be now (the server reports this one's copies anew).
      const entry = { seq: event.seq, to, have: earlier ? earlier.have.filter((fp) => to.includes(fp)) : [], unreached: [] };
      const others = state.messages.filter((m) => m.seq !== event.seq);
      return { messages: [...others, entry].slice(-MAX_TRACKED) };
    }
    case 'receipt': {
      const acks = new Set(event.acks);
      let changed = false;
      const messages = state.messages.map((m) => {
        if (!acks.has(m.seq) || !m.to.includes(event.from) || m.have.includes(event.from)) return m;
        changed = true;
        return { ...m, have: [...m.have, event.from], unreached: unreachedOf(m).filter((fp) => fp !== event.from) };
      });
      return changed ? { messages } : state;
    }
    case 'undelivered': {
      const m = state.messages.find((x) => x.seq === event.seq);
      if (!m || !m.to.includes(event.to) || m.have.includes(event.to) || unreachedOf(m).includes(event.to)) return state;
      const entry = { ...m, unreached: [...unreachedOf(m), event.to] };
      return { messages: state.messages.map((x) => (x === m ? entry : x)) };
    }
    case 'forget': {
      const messages = state.messages.filter((m) => m.seq !== event.seq);
      return messages.length === state.messages.length ? state : { messages };
    }
    default:
      return state;
  }
}

/** Records read from the contact book carry no `unreached`. */
const unreachedOf = (m) => m.unreached || [];

/**
 * {have, of, complete, missing: [fps without a receipt yet], unreached: [fps whose copy the server reported
 * undelivered]} for message `seq`, or null when not followed.
 */
export function deliveryOf(state, seq) {
  const m = state.messages.find((x) => x.seq === seq);
  if (!m) return null;
  return {
    have: m.have.length, of: m.to.length, complete: m.have.length === m.to.length, missing: m.to.filter((fp) => !m.have.includes(fp)), unreached: [...unreachedOf(m)],
  };
}
