// Receiving for groups (PROTOCOL §6 "Groups"): what comes to a group's handles (messages, receipts, versions,
// keys, leaving, removal notices) and what a contact hands us (a version that adds us, keys), opened in the
// crypto worker and run through the pure core (grouplist.js, groupmessages.js, groupdelivery.js). Part of the
// group wiring: groupsync.js makes it with the helpers both share, and every step here runs in the group's lane.
//
// Invariant: nothing is shown as a member's unless the crypto worker found exactly that member's key among the
// members' keys and the signature verifies; what fails a check is shown marked, or (signed by no member) not at
// all, and what concerns the group as a whole is also kept as an alert.
import { FRAME_OVERHEAD } from './envelope.js';
import { deliveries } from './groupdelivery.js';
import { applyVersion, current, joinGroup, leaveReceived, memberOf, readVersion } from './grouplist.js';
import { handoverConfirmed } from './grouphandover.js';
import {
  buildGroupJoined, buildGroupReceipt, checkGroupText, memberKeyStatus, contactKeys, emptyGroupMessages, holdForVersion, parseGroupEnvelope, releaseWaiting,
  removalNotice, takeGroupKeys,
} from './groupmessages.js';
import { openGroupMessage } from './groupopen.js';
import {
  MAX_GROUPS_PER_CONTACT, joinProblem, newGroup, withAlert, withGroupLine, withReplacedKeys, withVersionOutcome,
} from './groups.js';
import { friendLabel, labelText } from './names.js';
import { isSkewed } from './inbox.js';
import { isLive } from './model.js';
import { MAX_GROUPS } from './rendezvous.js';

/**
 * @param {object} ctx  from groupsync.js: pgp, getModel, get(gid), put(group), me(), now(), inLane(gid, task),
 *   withKeys(group), keyIdsOf(armored), derive(), persist(), sendSealed(text, armored, route), notice, incoming
 */
/** Whether some member of the group's current version has no key yet. */
const lacksKeys = (group) => [...memberKeyStatus(group.list, group.messages).values()].includes('missing');

export function createGroupInbox({
  pgp, getModel, get, put, me, now, inLane, withKeys, keyIdsOf, derive, persist, sendSealed, notice, incoming, redo,
}) {
  async function sendReceipt(group, signer, acks) {
    const handle = getModel().groupHandles.send.get(group.gid)?.get(signer);
    const key = group.messages.keys[signer];
    if (!handle || !key) return;
    await persist();
    await sendSealed(buildGroupReceipt({ gid: group.gid, ts: now(), acks }), key.armored, { handle }).catch(() => {});
  }

  /**
   * Tells `friend`, the contact who handed us the group, that we hold its current version and every member's key
   * (grouphandover.js: it stops handing it again), by its group handle and to its key alone. Not while a key is
   * missing: the keys come after the version, and one of them may be what was lost.
   */
  async function confirmJoined(gid, friend) {
    const group = get(gid);
    if (!group || group.status !== 'member' || !memberOf(current(group.list), me()) || lacksKeys(group)) return;
    const handle = getModel().groupHandles.send.get(gid)?.get(friend.fingerprint);
    if (!handle) return;
    await sendSealed(buildGroupJoined({ gid, ver: current(group.list).ver, ts: now() }), friend.publicArmored, { handle }).catch(() => {});
  }

  /** A version (read) signed by `signer` for a group we hold: applied, and what it did shown. */
  async function takeVersion(group, version, signer) {
    const applied = applyVersion(group.list, version, signer, now());
    group = { ...group, list: applied.state };
    for (const result of [applied.result, ...applied.released]) group = withVersionOutcome(group, result, signer);
    // Our own versions that lost to a change made at the same time: made again on top of the winner, once the
    // group is stored (redo queues its work behind this step in the group's lane).
    const lost = [applied.result, ...applied.released].flatMap((r) => (r.ok && r.conflict
      ? r.conflict.dropped.filter((d) => d.signer === me()).map((d) => ({ ...d, winner: r.conflict.kept.signer })) : []));
    if (lost.length) redo(group.gid, lost);
    if (applied.result.ok && applied.result.removedMe) group = { ...group, status: 'removed' };
    if (group.status === 'removed' && memberOf(current(group.list), me())) group = { ...group, status: 'member' };
    group = await withKeys(group);
    const released = releaseWaiting(group.waiting, group.list, now());
    group = { ...group, waiting: released.waiting };
    for (const item of released.expired) group = withGroupLine(group, { direction: 'system', what: 'unverifiable', from: item.signer });
    for (const item of released.ready) group = await takeText(group, item);
    return group;
  }

  /** A checked `gtext` (item: {envelope, signer, recipients, receivedAt}) taken into `group`. */
  async function takeText(group, item) {
    const { envelope, signer, recipients } = item;
    const held = group.lines.find((l) => l.direction === 'in' && l.from === signer && l.seq === envelope.seq && l.verified);
    const { messages, verdict } = checkGroupText(group.list, group.messages, {
      envelope, signer, recipients, held: held ? { ts: held.sentTs, text: held.text } : null,
    });
    if (verdict.kind === 'wait') {
      const { waiting, evicted } = holdForVersion(group.waiting, item, now());
      let out = { ...group, waiting };
      for (const e of evicted) out = withGroupLine(out, { direction: 'system', what: 'unverifiable', from: e.signer });
      return out;
    }
    let out = { ...group, messages };
    if (verdict.kind !== 'duplicate') {
      out = withGroupLine(out, {
        direction: 'in', from: signer, text: envelope.text, sentTs: envelope.ts, receivedAt: item.receivedAt, seq: envelope.seq,
        verified: verdict.verified, problems: verdict.problems, notes: verdict.notes, missing: verdict.missing,
        // Group messages come through handles and the mailbox: the contacts' margin for the sender's clock.
        skewed: isSkewed(envelope.ts, item.receivedAt, 'handle'),
        outsiders: verdict.outsiders.map((o) => o.fp || o.keyId),
      });
      incoming(group.gid);
    }
    if (verdict.receipt) {
      await put(out);
      await sendReceipt(out, signer, [envelope.seq]);
      out = get(group.gid);
    }
    return out;
  }

  /** The worker's reading of each armored key of a `gkeys` envelope ({fingerprint, keyIds, signingKeyIds} or {error}). */
  async function readKeys(keys) {
    const read = [];
    for (const armored of keys) {
      read.push(await pgp.readFriendKey(armored).then(
        ({ fingerprint, keyIds, signingKeyIds }) => ({ fingerprint, keyIds, signingKeyIds }), (e) => ({ error: e.code || 'refused' })));
    }
    return read;
  }

  async function takeKeys(group, envelope, signer) {
    const friends = [...getModel().friends.values()].filter((f) => isLive(f) && f.trust !== 'changed' && f.publicArmored);
    const ids = new Map();
    for (const f of friends) {
      const read = await keyIdsOf(f.publicArmored).catch(() => null);
      if (read) ids.set(f.fingerprint, read);
    }
    const { messages, result } = takeGroupKeys(group.list, group.messages, {
      envelope, signer, read: await readKeys(envelope.keys), contacts: contactKeys(friends, ids),
    });
    let out = { ...group, messages };
    if (!result.ok && result.problem !== 'wait') {
      const line = { direction: 'system', what: 'keys_refused', problem: result.problem, by: signer, flagged: true };
      out = withAlert(withGroupLine(out, line), line);
    }
    if (result.ok) {
      for (const o of result.outcomes.filter((x) => x.outcome === 'key_changed')) {
        const line = { direction: 'system', what: 'key_changed', member: o.fingerprint, flagged: true };
        out = withAlert(withGroupLine(out, line), line);
      }
      for (const o of result.outcomes.filter((x) => x.outcome === 'shared_key_id')) {
        const line = { direction: 'system', what: 'key_shares_id', member: o.fingerprint, by: signer, flagged: true };
        out = withAlert(withGroupLine(out, line), line);
      }
    }
    return out;
  }

  /** A group envelope from contact `peer` (signed by its pinned key): joining, or a version or keys for a group. */
  async function fromContact({ peer, text }) {
    const friend = getModel().friends.get(peer);
    const parsed = parseGroupEnvelope(text);
    if (!friend || !parsed.ok) return;
    const { envelope } = parsed;
    await inLane(envelope.gid, async () => {
      const held = get(envelope.gid);
      if (envelope.kind === 'group') {
        const read = await readVersion(text);
        if (!read.ok) return;
        if (held && held.status === 'member') {
          await put(await takeVersion(held, read.version, friend.fingerprint));
          await derive();
          await confirmJoined(envelope.gid, friend);
          return;
        }
        // A group we left or were removed from is joined again only by a later version (one that adds us
        // back), never by a replay of the version we held then.
        if (held && read.version.ver <= current(held.list).ver) return;
        // A group we took off the list joins again only by a newer version; one contact hands us at most
        // MAX_GROUPS_PER_CONTACT groups (groups.js joinProblem).
        const problem = held ? null : joinProblem(getModel(), read.version, friend.fingerprint, MAX_GROUPS);
        if (problem === 'groups_full') notice('groups_full', { max: MAX_GROUPS });
        if (problem === 'contact_full') notice('groups_from_contact_full', { max: MAX_GROUPS_PER_CONTACT, who: labelText(friendLabel(friend)) });
        if (problem) return;
        const joined = joinGroup(read.version, friend.fingerprint, { me: me() });
        if (!joined.result.ok) return;
        let group = newGroup(joined.state, emptyGroupMessages(), now());
        if (held) group = { ...group, lines: held.lines, nextLine: held.nextLine, messages: { ...held.messages, keys: {} } };
        group = await withKeys(group);
        group = withGroupLine({ ...group, handedBy: friend.fingerprint }, { direction: 'system', what: 'joined', by: friend.fingerprint });
        // Keys this version replaced are shown changed to a newcomer too (it cannot check the version before).
        const replaced = read.version.members.filter((m) => m.was && m.fp !== me()).map((m) => ({ fp: m.fp, was: m.was }));
        group = withReplacedKeys({ ...group, keyChanges: {} }, replaced, friend.fingerprint);
        await put(group);
        await derive();
        await persist();
        await confirmJoined(envelope.gid, friend);
      } else if (envelope.kind === 'gkeys' && held) {
        const wasLacking = lacksKeys(held);
        await put(await takeKeys(held, envelope, friend.fingerprint));
        if (wasLacking) await confirmJoined(envelope.gid, friend);
      }
    });
  }

  /** A MESSAGE to one of the groups' handles. */
  function receive(frame) {
    const gid = getModel().groupHandles.listen.get(frame.handle);
    if (!gid) return Promise.resolve();
    return inLane(gid, () => receiveInLane(gid, frame));
  }

  async function receiveInLane(gid, frame) {
    let group = get(gid);
    if (!group || group.status !== 'member') return;
    const payload = frame.payload;
    const max = getModel().session.limits.max_message_bytes + FRAME_OVERHEAD;
    if (typeof payload !== 'string' || !payload.startsWith('-----BEGIN PGP MESSAGE-----') || payload.length > max) return;
    const opened = await openGroupMessage(pgp, payload, group.messages.keys).catch((e) => ({ ok: false, problem: e.code === 'too_slow' ? 'too_slow' : 'undecryptable' }));
    if (!opened.ok) {
      // Signed by no member (or badly): shown, never as anyone's message. One we cannot decrypt is not for us.
      if (opened.problem !== 'undecryptable') {
        await put(withGroupLine(get(gid), { direction: 'system', what: 'not_from_member', problem: opened.problem, flagged: true }));
      }
      return;
    }
    const parsed = parseGroupEnvelope(opened.text);
    if (!parsed.ok || parsed.envelope.gid !== gid) {
      await put(withGroupLine(group, { direction: 'system', what: 'malformed', from: opened.signer, flagged: true }));
      return;
    }
    const { envelope } = parsed;
    const signer = opened.signer;
    // A new member that writes under the version it was added in, or says it joined, needs the group no more.
    if (envelope.kind === 'gtext' || envelope.kind === 'gjoined') group = { ...group, handovers: handoverConfirmed(group.handovers, signer, envelope.ver) };
    switch (envelope.kind) {
      case 'gjoined':
        break;
      case 'gtext':
        group = await takeText(group, { ver: envelope.ver, envelope, signer, recipients: opened.recipients, receivedAt: now() });
        break;
      case 'greceipt':
        group = { ...group, deliveries: deliveries(group.deliveries, { type: 'receipt', from: signer, acks: envelope.acks }) };
        break;
      case 'group': {
        const read = await readVersion(opened.text);
        if (!read.ok) return;
        group = await takeVersion(group, read.version, signer);
        break;
      }
      case 'gkeys':
        group = await takeKeys(group, envelope, signer);
        break;
      case 'gremoved': {
        const notice = removalNotice(group.list, { envelope, signer });
        if (notice.ok) {
          group = withGroupLine({ ...group, status: 'removed' }, { direction: 'system', what: 'removed_me', by: signer });
        } else {
          const line = { direction: 'system', what: 'change_refused', problem: notice.problem, by: signer, flagged: true };
          group = withAlert(withGroupLine(group, line), line);
        }
        break;
      }
      case 'gleave': {
        const left = leaveReceived(group.list, signer, envelope.ver);
        if (left.ok) group = withGroupLine({ ...group, list: left.state }, { direction: 'system', what: 'member_left', from: signer });
        break;
      }
      default:
        return;
    }
    await put(group);
    await derive();
  }

  return { fromContact, receive };
}
