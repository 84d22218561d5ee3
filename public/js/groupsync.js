// The wiring's side of groups (PROTOCOL §6 "Groups", §11): the asynchronous steps around the pure core
// (grouplist.js, groupmessages.js, grouphandles.js, groupdelivery.js): hashing a version, deriving handles,
// sealing and opening in the crypto worker, and the frames. Each step reads the group's record from the
// domain state, runs the core on it, and stores the whole new record (groups.js groupPut). Receiving is
// groupinbox.js, made here with the helpers both share.
//
// Invariants: every step on one group runs in that group's lane of the page's event queue (peerqueue.js,
// key "group:<gid>"), so two steps never interleave on one record; a step stores its record before anything it
// decided leaves (a seq, a receipt), and the contact book holds it first (persist). Nothing is shown as from a
// member unless the crypto worker found that member's key, and only that one, signed it.
import { deliveries, deliveryOf } from './groupdelivery.js';
import { groupHandles, versionHandles } from './grouphandles.js';
import {
  MAX_MEMBERS, applyVersion, createGroupList, current, expireGroup, isAdmin, joinGroup, leaveProblem, memberOf, newGid, proposeChange,
  readVersion, redoChange,
} from './grouplist.js';
import {
  MAX_GROUP_KEYS, buildGroupKeys, buildGroupLeave, buildGroupRemoved, buildGroupText, contactKeys, emptyGroupMessages,
  keysFromContacts, pruneMessages, releaseWaiting, sendPlan, takeSendSeq, withOwnKey,
} from './groupmessages.js';
import { createGroupInbox } from './groupinbox.js';
import { handoverStarted, handoversDue, nextHandover } from './grouphandover.js';
import { newGroup, withGroupLine, withGroupLines, withReplacedKeys } from './groups.js';
import { LEAVE_PROBLEM_TEXT } from './grouptext.js';
import { routeFor } from './contacts.js';
import { isLive } from './model.js';
import { keyName } from './names.js';
import { MAX_GROUPS, daysListened, msUntilListenChange, newSecret, utcDay } from './rendezvous.js';

/** Uploads of our group messages whose UNDELIVERED reports are still matched to their members (newest kept). */
const UPLOADS_FOLLOWED = 1024;

/** Pinned keys whose key IDs are remembered (our own and contacts' keys: MAX_CONTACTS is 1,173). */
const KEY_ID_CACHE = 2048;
/** Armored keys per `gkeys` envelope are also kept under this many characters, so one fits in a 64 KiB frame. */
const GKEYS_CHARS = 40000;

/** Hashes remembered per group of our changes made again after losing (and of the versions that made them again). */
const REDONE_KEPT = 64;

/** A thrown refusal the page shows where the user acted. */
class GroupError extends Error {}

/**
 * @param {object} options
 * @param {object} options.transport  transport.js (request)
 * @param {object} options.pgp  cryptoclient.js
 * @param {() => object} options.getModel
 * @param {(event: object) => Promise<void>} options.dispatch
 * @param {() => {fingerprint: string, publicArmored: string, userId: string}} options.identity
 * @param {(key: string, task: () => Promise<void>) => Promise<boolean>} options.lane  peerqueue.js run
 * @param {() => Promise<void>} options.persist  resolves once the contact book holds the current state
 * @param {(error: unknown) => void} options.onError
 * @param {(code: string, details?: object) => void} options.notice  a notice for the page (text.js noticeText)
 * @param {(gid: string) => void} [options.incoming]  a member's message was added to the group's conversation
 * @param {() => number} [options.now]
 */
export function createGroupSync({
  transport, pgp, getModel, dispatch, identity, lane, persist, onError, notice, incoming = () => {}, now = () => Date.now(),
}) {
  const keyIdCache = new Map(); // armored -> {keyIds, signingKeyIds} (the crypto worker's reading of a pinned key)
  let derivedFor = '';
  let dayTimer = null;
  let handoverTimer = null;
  // ref of an upload of one of our messages -> {gid, seq, members: handle -> fp}: the server's UNDELIVERED names
  // the ref and the handle of the copy it could not deliver (PROTOCOL §11). Not kept over a reload.
  const uploads = new Map();
  let nextUpload = 1;
  let handoverAt = null;
  // Until this connection's mailbox was fetched, yesterday's handles are listened on too (rendezvous.js).
  let catchUp = true;

  const get = (gid) => getModel().groups.get(gid);
  const me = () => identity().fingerprint;
  const put = (group) => dispatch({ type: 'groupPut', group: { ...group, updatedAt: now() } }).then(armHandovers);

  /** Runs `task` in the group's lane; resolves with its result or rejects with its error (for the page). */
  function inLane(gid, task) {
    return new Promise((resolve, reject) => {
      lane(`group:${gid}`, () => task().then(resolve, reject)).then((ran) => {
        if (!ran) reject(new GroupError('Too much is waiting for this group; try again in a moment.'));
      });
    });
  }

  /** {keyIds, signingKeyIds} of a pinned key (ours or a contact's), as the crypto worker read it. */
  async function keyIdsOf(armored) {
    if (!keyIdCache.has(armored)) {
      if (keyIdCache.size >= KEY_ID_CACHE) keyIdCache.clear(); // only pinned keys come here: a bound, not a working set
      const { keyIds, signingKeyIds } = await pgp.readFriendKey(armored);
      keyIdCache.set(armored, { keyIds, signingKeyIds });
    }
    return keyIdCache.get(armored);
  }

  /** The group's keys with ours and our contacts' pinned keys filled in (groupmessages.js). */
  async function withKeys(group) {
    const { fingerprint, publicArmored } = identity();
    let messages = withOwnKey(group.messages, fingerprint, publicArmored, await keyIdsOf(publicArmored));
    const friends = [...getModel().friends.values()].filter((f) => isLive(f) && f.trust !== 'changed' && f.publicArmored);
    const ids = new Map();
    for (const f of friends) {
      if (!memberOf(current(group.list), f.fingerprint)) continue;
      const read = await keyIdsOf(f.publicArmored).catch(() => null);
      if (read) ids.set(f.fingerprint, read);
    }
    messages = keysFromContacts(group.list, messages, contactKeys(friends, ids));
    return { ...group, messages: pruneMessages(group.list, messages) };
  }

  // --- handles ---------------------------------------------------------------------------------------------

  /**
   * Derives the handles of every group we are a member of and stores them when they changed. One derivation at a
   * time, each from the state as it is when it starts, so an older one can never be stored after a newer one.
   */
  let deriving = Promise.resolve();
  function derive() {
    const run = deriving.then(deriveNow);
    deriving = run.catch(() => {});
    return run;
  }

  async function deriveNow() {
    const at = now();
    const groups = [...getModel().groups.values()].filter((g) => g.status === 'member');
    const days = daysListened(at, { catchUp }).join(',');
    const key = `${utcDay(at)}|${days}|${groups.map((g) => `${g.gid}:${current(g.list).hash}:${g.list.previousSecrets.map((p) => p.secret).join('+')}`).join(',')}`;
    if (key === derivedFor) return;
    const listen = new Map();
    const send = new Map();
    for (const g of groups) {
      const handles = await groupHandles(g.list, at, undefined, { catchUp });
      for (const [handle, gid] of handles.listen) listen.set(handle, gid);
      send.set(g.gid, handles.send);
    }
    derivedFor = key;
    await dispatch({ type: 'groupHandlesDerived', listen, send });
  }

  /**
   * Whenever the days listened on change (an hour either side of UTC midnight, and midnight itself): the new
   * handles, and what waited too long given up.
   */
  function scheduleDay() {
    clearTimeout(dayTimer);
    dayTimer = setTimeout(() => {
      scheduleDay();
      for (const g of getModel().groups.values()) inLane(g.gid, () => expire(g.gid)).catch(onError);
      derive().catch(onError);
    }, msUntilListenChange(now()) + 1000);
  }
  scheduleDay();

  async function expire(gid) {
    let group = get(gid);
    if (!group) return;
    const { state } = expireGroup(group.list, now());
    const released = releaseWaiting(group.waiting, state, now());
    group = { ...group, list: state, waiting: released.waiting };
    for (const item of released.expired) group = withGroupLine(group, { direction: 'system', what: 'unverifiable', from: item.signer });
    await put(group);
  }

  // --- sending ---------------------------------------------------------------------------------------------

  /** Seals `text` to one key (signed) and sends it to `route` ({handle} or {to}); resolves with the ACK. */
  async function sendSealed(text, armored, route) {
    const payload = await pgp.seal(text, armored);
    return transport.request({ type: 'MESSAGE', ...route, payload });
  }

  /** Seals `text` once to `keys` and sends it to `handles` (§11); resolves with the ACK, or null for nobody. */
  async function sendToHandles(text, keys, handles, ref = undefined) {
    if (handles.length === 0) return null;
    const payload = await pgp.sealMany(text, keys);
    return transport.request({ type: 'MESSAGE', handles, payload, ...(ref ? { ref } : {}) });
  }

  /**
   * An UNDELIVERED frame: when it is about a copy of one of our group messages (its ref and handle), that
   * member is marked as not reached on the message. Returns whether it was ours.
   */
  function undelivered(frame) {
    const upload = typeof frame.ref === 'string' ? uploads.get(frame.ref) : null;
    const fp = upload && typeof frame.handle === 'string' ? upload.members.get(frame.handle) : null;
    if (!fp) return false;
    inLane(upload.gid, async () => {
      const group = get(upload.gid);
      if (!group) return;
      const next = deliveries(group.deliveries, { type: 'undelivered', seq: upload.seq, to: fp });
      if (next !== group.deliveries) await put({ ...group, deliveries: next });
    }).catch(onError);
    return true;
  }

  /** `gkeys` envelopes holding `keys`, at most MAX_GROUP_KEYS and GKEYS_CHARS each. */
  function keyEnvelopes(gid, ver, keys) {
    const batches = [];
    let batch = [];
    let chars = 0;
    for (const armored of keys) {
      if (batch.length && (batch.length === MAX_GROUP_KEYS || chars + armored.length > GKEYS_CHARS)) {
        batches.push(batch);
        batch = [];
        chars = 0;
      }
      batch.push(armored);
      chars += armored.length;
    }
    if (batch.length) batches.push(batch);
    return batches.flatMap((b) => buildGroupKeys({ gid, ver, ts: now(), keys: b }));
  }

  /**
   * Hands version `text` and every other member's key to `friend`, a contact, by its contact route: how a
   * member joins (§6 "Joining"). Returns whether it went.
   */
  async function handOver(group, friend, text) {
    const route = routeFor(getModel(), friend);
    if (!route) return false;
    await sendSealed(text, friend.publicArmored, route);
    const keys = current(group.list).members.filter((m) => m.fp !== friend.fingerprint && group.messages.keys[m.fp])
      .map((m) => group.messages.keys[m.fp].armored);
    for (const envelope of keyEnvelopes(group.gid, current(group.list).ver, keys)) await sendSealed(envelope, friend.publicArmored, route);
    return true;
  }

  /** Our message `seq` (a line of the group) sent under the version held now, to `only` fps (all when null). */
  async function transmit(gid, seq, only = null) {
    let group = get(gid);
    const line = group && group.lines.find((l) => l.direction === 'out' && l.seq === seq);
    if (!line || group.status !== 'member') return;
    const plan = sendPlan(group.list, group.messages, getModel().groupHandles.send.get(gid) || new Map());
    const envelope = buildGroupText({ gid, ver: plan.ver, list: plan.list, seq, ts: line.ts, text: line.text });
    const handles = plan.to.map((fp, i) => [fp, plan.handles[i]]).filter(([fp]) => !only || only.includes(fp)).map(([, h]) => h);
    let state = 'sent';
    let error = '';
    try {
      const ref = `g${nextUpload++}`;
      const members = new Map(plan.to.map((fp, i) => [plan.handles[i], fp]).filter(([, fp]) => !only || only.includes(fp)));
      uploads.set(ref, { gid, seq, members });
      if (uploads.size > UPLOADS_FOLLOWED) uploads.delete(uploads.keys().next().value);
      await sendToHandles(envelope, plan.keys, handles, ref);
    } catch (e) {
      state = 'error';
      error = (e && e.code) || 'failed';
    }
    group = get(gid);
    group = withGroupLines(group, (l) => l.direction === 'out' && l.seq === seq, (l) => ({ ...l, state, error, missing: plan.missing }));
    group = { ...group, deliveries: deliveries(group.deliveries, { type: 'sent', seq, to: plan.to }) };
    await put(group);
  }

  /**
   * A version we made (proposeChange / createGroupList), applied to our own record and sent: to the members who
   * held the version before by its handles (encrypted to the new version's members only), to new members by
   * their contact routes with every key, and the new members' keys to the others.
   */
  async function commit(gid, text, added) {
    let group = get(gid);
    const before = current(group.list);
    const read = await readVersion(text);
    if (!read.ok) throw new GroupError('That change would break the group\'s bounds.');
    const applied = applyVersion(group.list, read.version, me(), now());
    if (!applied.result.ok || !applied.result.applied) throw new GroupError('That change could not be applied.');
    group = await withKeys({ ...group, list: applied.state });
    group = withGroupLine(group, { direction: 'system', what: 'changed', by: me(), change: applied.result.change });
    group = withReplacedKeys(group, applied.result.change.replaced, me());
    await put(group);
    await derive();
    await persist();
    const version = current(group.list);
    const keys = version.members.map((m) => group.messages.keys[m.fp]?.armored).filter(Boolean);
    const stay = new Map([...(await versionHandles(before, me(), utcDay(now())))].filter(([fp]) => memberOf(version, fp)));
    await sendToHandles(text, keys, [...stay.values()]);
    const newKeys = added.map((f) => f.publicArmored);
    for (const envelope of keyEnvelopes(gid, version.ver, newKeys)) {
      const handles = [...(await versionHandles(version, me(), utcDay(now())))].filter(([fp]) => stay.has(fp)).map(([, h]) => h);
      await sendToHandles(envelope, keys, handles);
    }
    // A removed member cannot be given the new version (it holds the new secret): it is told, by the old
    // version's handle and to its key alone, that a version without it exists, so its client stops.
    const beforeHandles = await versionHandles(before, me(), utcDay(now()));
    for (const m of before.members) {
      const key = group.messages.keys[m.fp] || get(gid).messages.keys[m.fp];
      if (memberOf(version, m.fp) || m.fp === me() || !key || !beforeHandles.get(m.fp)) continue;
      await sendSealed(buildGroupRemoved({ gid, ts: now(), ver: version.ver }), key.armored, { handle: beforeHandles.get(m.fp) }).catch(() => {});
    }
    await handOverAll(gid, added, text, version.ver);
  }

  /**
   * Hands version `text` (number `ver`) to each of `friends`, new members, and follows each handover until the
   * member confirms (grouphandover.js); a member without a route is shown as not reached.
   */
  async function handOverAll(gid, friends, text, ver) {
    for (const friend of friends) {
      let handed = false;
      try {
        handed = await handOver(get(gid), friend, text);
      } catch {
        handed = true; // sent or not, the handover is followed and tried again
      }
      const group = get(gid);
      if (handed) await put({ ...group, handovers: handoverStarted(group.handovers, friend.fingerprint, ver, now()) });
      else await put(withGroupLine(group, { direction: 'system', what: 'not_handed', member: friend.fingerprint }));
    }
    await persist();
  }

  /**
   * Hands the current version and the keys again to the new members of `gid` who have not confirmed (every open
   * handover when `all`, as after a new connection; else those due), and gives up on those tried too often.
   */
  async function rehand(gid, { all = false } = {}) {
    let group = get(gid);
    if (!group || group.status !== 'member' || group.handovers.length === 0) return;
    const { handovers, due, givenUp } = handoversDue(group.handovers, group.list, now(), { all });
    group = { ...group, handovers };
    for (const fp of givenUp) group = withGroupLine(group, { direction: 'system', what: 'handover_given_up', member: fp, flagged: true });
    await put(group);
    await persist();
    const text = current(group.list).text;
    for (const fp of due) {
      const friend = [...getModel().friends.values()].find((f) => f.fingerprint === fp && isLive(f) && f.publicArmored && f.trust !== 'changed');
      if (friend && text) await handOver(get(gid), friend, text).catch(() => {});
    }
  }

  /** One timer for the earliest handover due in any group we are a member of. */
  function armHandovers() {
    let at = null;
    for (const g of getModel().groups.values()) {
      const next = g.status === 'member' ? nextHandover(g.handovers) : null;
      if (next !== null && (at === null || next < at)) at = next;
    }
    if (at === handoverAt) return;
    clearTimeout(handoverTimer);
    handoverAt = at;
    if (at === null) return;
    handoverTimer = setTimeout(() => {
      handoverAt = null;
      for (const g of getModel().groups.values()) {
        const next = g.status === 'member' ? nextHandover(g.handovers) : null;
        if (next !== null && next <= now()) inLane(g.gid, () => rehand(g.gid)).catch(onError);
      }
      armHandovers();
    }, Math.min(Math.max(at - now(), 0) + 100, 2 ** 31 - 1));
  }

  // --- the user's actions ------------------------------------------------------------------------------------

  /**
   * What a member is called in a list we sign, which every member reads: the name on its key (its owner's
   * choice), never the user's own nickname for it (that stays on this device), else the end of its fingerprint.
   */
  function memberName(friend) {
    return [...(keyName(friend.userId) || `Member ${friend.fingerprint.slice(-8)}`)].slice(0, 64).join('');
  }

  function ownName() {
    return [...(keyName(identity().userId) || `Member ${me().slice(-8)}`)].slice(0, 64).join('');
  }

  /** Friends who can be handed a group: live, key pinned and not an unconfirmed change, reachable. */
  function candidate(id) {
    const friend = getModel().friends.get(id);
    if (!isLive(friend) || !friend.publicArmored || friend.trust === 'changed' || !routeFor(getModel(), friend)) return null;
    return friend;
  }

  async function create({ name, memberIds }) {
    const groupName = name.trim();
    if (!groupName) throw new GroupError('Give the group a name.');
    if ([...groupName].length > 64) throw new GroupError('A group\'s name is at most 64 characters.');
    if (getModel().groups.size >= MAX_GROUPS) throw new GroupError(`You are in ${MAX_GROUPS} groups, the most SecChat can listen for at once. Leave one first.`);
    const friends = [...new Set(memberIds)].map(candidate);
    if (friends.length === 0) throw new GroupError('Choose at least one friend.');
    if (friends.some((f) => !f)) throw new GroupError('A friend you chose cannot be reached or has a changed key.');
    if (friends.length > MAX_MEMBERS - 1) throw new GroupError(`A group has at most ${MAX_MEMBERS} members.`);
    const made = createGroupList({
      gid: newGid(), ts: now(), name: groupName, secret: newSecret(), me: { fp: me(), name: ownName() },
      others: friends.map((f) => ({ fp: f.fingerprint, name: memberName(f) })),
    });
    if (!made.ok) throw new GroupError('That group could not be made.');
    const read = await readVersion(made.text);
    const joined = joinGroup(read.version, me(), { me: me() });
    const gid = made.list.gid;
    await inLane(gid, async () => {
      let group = await withKeys(newGroup(joined.state, emptyGroupMessages(), now()));
      group = withGroupLine(group, { direction: 'system', what: 'created' });
      await put(group);
      await derive();
      await persist();
      await handOverAll(gid, friends, made.text, 1);
    });
    return gid;
  }

  function write(gid, text) {
    return inLane(gid, async () => {
      let group = get(gid);
      if (!group || group.status !== 'member') throw new GroupError('You are not in this group any more.');
      const taken = takeSendSeq(group.messages);
      group = withGroupLine({ ...group, messages: taken.messages }, {
        direction: 'out', from: me(), seq: taken.seq, ts: now(), text, state: 'sending', error: '', missing: [],
      });
      await put(group);
      await persist();
      await transmit(gid, taken.seq);
    });
  }

  /** Our messages not confirmed by every member yet go again to those who have not confirmed them. */
  function resendAll() {
    for (const g of getModel().groups.values()) {
      if (g.status !== 'member') continue;
      inLane(g.gid, async () => {
        const group = get(g.gid);
        for (const line of group.lines) {
          if (line.direction !== 'out') continue;
          const delivery = deliveryOf(group.deliveries, line.seq);
          if (delivery && !delivery.complete) await transmit(g.gid, line.seq, delivery.missing);
          else if (!delivery && line.state === 'error') await transmit(g.gid, line.seq);
        }
      }).catch(onError);
    }
  }

  /** A new secret when the change also removes members who sent gleave (proposeChange removes them), else none. */
  function secretFor(group) {
    return group.list.leaving.length ? newSecret() : null;
  }

  function asAdmin(gid, makeChange, added = []) {
    return inLane(gid, async () => {
      const group = get(gid);
      if (!group || group.status !== 'member' || !isAdmin(current(group.list), me())) throw new GroupError('Only an admin can change the group.');
      const proposed = makeChange(group);
      if (!proposed.ok) {
        throw new GroupError(proposed.problem === 'no_change' ? 'That changes nothing.' : `That change is not possible (${proposed.problem}).`);
      }
      await commit(gid, proposed.text, added);
    });
  }

  function addMember(gid, friendId) {
    const friend = candidate(friendId);
    if (!friend) return Promise.reject(new GroupError('That friend cannot be reached or has a changed key.'));
    return asAdmin(gid, (group) => {
      if (memberOf(current(group.list), friend.fingerprint)) return { ok: false, problem: 'no_change' };
      if (current(group.list).members.length >= MAX_MEMBERS) return { ok: false, problem: 'full' };
      return proposeChange(group.list, { add: [{ fp: friend.fingerprint, name: memberName(friend) }] }, { ts: now(), secret: secretFor(group) });
    }, [friend]);
  }

  /**
   * Gives member `fp` its new key, that of friend `friendId` (the same person: the friend's key replaced `fp`,
   * model.js keyBefore): one version removes `fp` and adds the friend with `was: fp`, which members show as
   * *key changed* rather than as a removal and an addition; handed to the friend as any new member.
   */
  function replaceKey(gid, fp, friendId) {
    const friend = candidate(friendId);
    if (!friend) return Promise.reject(new GroupError('That friend cannot be reached or has a changed key.'));
    return asAdmin(gid, (group) => {
      const version = current(group.list);
      const old = memberOf(version, fp);
      if (!old || memberOf(version, friend.fingerprint)) return { ok: false, problem: 'no_change' };
      return proposeChange(group.list, {
        remove: [fp], add: [{ fp: friend.fingerprint, name: memberName(friend), admin: old.admin, was: fp }],
      }, { ts: now(), secret: newSecret() });
    }, [friend]);
  }

  function removeMember(gid, fp) {
    return asAdmin(gid, (group) => proposeChange(group.list, { remove: [fp] }, { ts: now(), secret: newSecret() }));
  }

  /** Makes a member an admin (`admin` true) or no longer one. */
  function setAdmin(gid, fp, admin) {
    return asAdmin(gid, (group) => proposeChange(group.list, { admin: { [fp]: admin } }, { ts: now(), secret: secretFor(group) }));
  }

  function rename(gid, name) {
    const clean = name.trim();
    if (!clean || [...clean].length > 64) return Promise.reject(new GroupError('A group\'s name is 1 to 64 characters.'));
    return asAdmin(gid, (group) => proposeChange(group.list, { name: clean }, { ts: now(), secret: secretFor(group) }));
  }

  function leave(gid) {
    return inLane(gid, async () => {
      const group = get(gid);
      if (!group || group.status !== 'member') return;
      if (leaveProblem(group.list) === 'last_admin') throw new GroupError(LEAVE_PROBLEM_TEXT.last_admin);
      const keys = current(group.list).members.map((m) => group.messages.keys[m.fp]?.armored).filter(Boolean);
      const handles = [...(getModel().groupHandles.send.get(gid) || new Map()).values()];
      await sendToHandles(buildGroupLeave({ gid, ver: current(group.list).ver, ts: now() }), keys, handles).catch(() => {});
      await put(withGroupLine({ ...group, status: 'left' }, { direction: 'system', what: 'you_left' }));
      await derive();
    });
  }

  /** Takes a group we no longer belong to off the list (and out of the contact book). */
  function forget(gid) {
    return inLane(gid, async () => {
      const group = get(gid);
      if (!group || group.status === 'member') return;
      await dispatch({ type: 'groupForgotten', gid });
    });
  }

  // Per group, the hashes of our versions that lost and were made again, and of the versions that made them
  // again (this page's life, REDONE_KEPT each): a change is made again at most once, and a redo that loses too is not.
  const redone = new Map();

  /** Our versions `dropped` ([{hash, change, winner}]) lost to a change made at the same time: each made again on the winner when it still makes sense. */
  function redo(gid, dropped) {
    inLane(gid, () => redoDropped(gid, dropped)).catch(onError);
  }

  async function redoDropped(gid, dropped) {
    for (const d of dropped) {
      const group = get(gid);
      if (!group || group.status !== 'member') return;
      const seen = redone.get(gid) || [];
      const remember = (...hashes) => redone.set(gid, [...seen, ...hashes].slice(-REDONE_KEPT));
      let decision = seen.includes(d.hash) ? { ok: false, problem: 'again' } : redoChange(group.list, d.change);
      let added = [];
      if (decision.ok) {
        // New members are handed the group by our contact with them: those we can no longer reach are left out.
        added = decision.change.add.map((m) => candidateByFingerprint(m.fp)).filter(Boolean);
        const add = decision.change.add.filter((m) => added.some((f) => f.fingerprint === m.fp));
        const change = { ...decision.change, add };
        const empty = !add.length && !change.remove.length && !Object.keys(change.admin).length && !Object.keys(change.rename).length && !change.name;
        decision = empty ? { ok: false, problem: 'unreachable' } : { ...decision, change };
      }
      const proposed = decision.ok
        ? proposeChange(group.list, decision.change, { ts: now(), secret: decision.removes || group.list.leaving.length ? newSecret() : null })
        : decision;
      if (!proposed.ok) {
        remember(d.hash);
        await put(withGroupLine(group, { direction: 'system', what: 'not_redone', by: d.winner, problem: proposed.problem, flagged: true }));
        continue;
      }
      try {
        await commit(gid, proposed.text, added);
      } catch {
        remember(d.hash);
        await put(withGroupLine(get(gid), { direction: 'system', what: 'not_redone', by: d.winner, problem: 'failed', flagged: true }));
        continue;
      }
      remember(d.hash, current(get(gid).list).hash);
      await put(withGroupLine(get(gid), { direction: 'system', what: 'redone', by: d.winner }));
    }
  }

  /** A friend who can be handed a group (candidate) by its key's fingerprint. */
  function candidateByFingerprint(fp) {
    const friend = [...getModel().friends.values()].find((f) => f.fingerprint === fp && isLive(f));
    return friend ? candidate(friend.id) : null;
  }

  const inbox = createGroupInbox({
    pgp, getModel, get, put, me, now, inLane, withKeys, keyIdsOf, derive, persist, sendSealed, notice, incoming, redo,
  });

  return {
    create, write, addMember, replaceKey, removeMember, setAdmin, rename, leave, forget, derive, undelivered,
    receive: (frame) => inbox.receive(frame).catch(onError),
    fromContact: inbox.fromContact,
    /** A new connection (CONNECT reply): yesterday's handles again until its mailbox is fetched. */
    onSession() {
      catchUp = true;
      derive().catch(onError);
    },
    /**
     * This connection's mailbox was fetched (contactsync.js): yesterday's handles go (unless near midnight), our
     * unconfirmed messages go again to who has not confirmed them, and the group again to new members who have
     * not confirmed it (a lost connection may have lost it).
     */
    onFetched() {
      catchUp = false;
      derive().catch(onError);
      resendAll();
      for (const g of getModel().groups.values()) {
        if (g.status === 'member' && g.handovers.length) inLane(g.gid, () => rehand(g.gid, { all: true })).catch(onError);
      }
    },
    /** Groups read from the contact book (groupbook.js): stored, keys refreshed, handles derived; and those taken off the list. */
    async loaded(groups, forgotten = []) {
      if (forgotten.length) await dispatch({ type: 'groupsForgottenLoaded', forgotten });
      for (const g of groups) {
        if (getModel().groups.has(g.gid)) continue;
        await inLane(g.gid, async () => put(await withKeys(g)));
      }
      // Groups read after this connection's first fetch still get theirs: yesterday's handles until the next
      // fetch, which a LISTEN that finds mail waiting asks for (contactsync.js).
      if (groups.length) catchUp = true;
      await derive();
    },
  };
}
