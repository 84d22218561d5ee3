// Groups end to end against the real binary, three and more browser contexts: a group created from friends,
// messages written once and read verified by every member with "N of M have it", members added (who see only
// what follows) and removed (whose key cannot open what follows), a member offline who gets the mail on
// return, a forged change refused and shown, and the page at 1280 and 360 px without serious axe violations.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { after } from 'node:test';
import {
  DESKTOP, PHONE, assertClean, befriend, closeTab, enterChat, generateKey, jsonFrames, newChatUser, openUser, reloadAndUnlock,
  screenshot, waitForSession,
} from './helpers/browser.mjs';
import { seriousViolations } from './helpers/axe.mjs';
import { createGpgHome, decryptAndVerify, encryptAndSign, generateGpgKey, importKey } from './helpers/gpg.mjs';
import { interceptedChatUser } from './helpers/mitm.mjs';
import { createHash, createHmac } from 'node:crypto';
import { browserWithServers } from './helpers/harness.mjs';

const harness = browserWithServers();
const GPG_PASSPHRASE = 'group gpg pass';
const gpgHomes = [];
after(() => gpgHomes.forEach((home) => home.destroy()));

/** A user whose key GnuPG made in a home of its own (so a test can decrypt with exactly that key). */
async function gpgUser(srv, name) {
  const home = createGpgHome();
  gpgHomes.push(home);
  const key = generateGpgKey(home, { name, passphrase: GPG_PASSPHRASE, kind: 'ecc' });
  const user = await openUser(harness.browser, srv, { name });
  await user.page.click('#tab-import');
  await user.page.fill('#import-private', key.privateArmored);
  await user.page.fill('#import-public', key.publicArmored);
  await user.page.fill('#import-passphrase', GPG_PASSPHRASE);
  await user.page.click('#import');
  await waitForSession(user);
  assert.equal(user.fingerprint, key.fingerprint);
  return Object.assign(user, { home, key });
}

/** The public keys `user` was sent in friend requests and acceptances. */
function keysReceived(user) {
  return jsonFrames(user).filter((f) => f.direction === 'received' && typeof f.json.public_key === 'string').map((f) => f.json.public_key);
}

/** Payloads `user` uploaded to several handles at once (§11), oldest first. */
function groupUploads(user) {
  return jsonFrames(user).filter((f) => f.direction === 'sent' && f.json.type === 'MESSAGE' && Array.isArray(f.json.handles)).map((f) => f.json);
}

/** Waits until `user`'s pane of `gid` lists `count` members, none with a missing key. */
async function membersReady(user, gid, count, timeout = 20000) {
  await user.page.waitForFunction(([g, n]) => {
    const members = [...document.querySelectorAll(`.group-pane[data-group="${g}"] .group-member`)];
    return members.length === n && members.every((m) => m.dataset.trust !== 'missing');
  }, [gid, count], { timeout });
}

const groupButton = (user) => user.page.locator('.group-item');
const groupPane = (user) => user.page.locator('.group-pane:not([hidden])');

/** `admin` creates a group named `name` with the friends `members` (users befriended with it). */
async function createGroup(admin, name, members) {
  await admin.page.click('#new-group');
  await admin.page.fill('#new-group-name', name);
  for (const m of members) await admin.page.check(`#new-group-member-${m.id}`);
  await admin.page.click('#new-group-create');
  await groupPane(admin).waitFor();
  return admin.page.getAttribute('.group-pane:not([hidden])', 'data-group');
}

/** Waits until `user` holds the group and opens it. */
async function openGroup(user, gid, timeout = 20000) {
  const button = user.page.locator(`.group-item[data-group="${gid}"]`);
  await button.waitFor({ timeout });
  await button.click();
  await user.page.locator(`.group-pane[data-group="${gid}"]`).waitFor({ state: 'visible' });
}

async function writeToGroup(user, gid, text) {
  const input = user.page.locator(`.group-pane[data-group="${gid}"] textarea`);
  await input.fill(text);
  await input.press('Enter');
}

/** The incoming group message with exactly `text`, once it arrived. */
async function groupMessage(user, gid, text, timeout = 20000) {
  const line = user.page.locator(`.group-pane[data-group="${gid}"] .msg-in`).filter({ has: user.page.locator('.msg-text', { hasText: text }) });
  await line.first().waitFor({ state: 'attached', timeout });
  return line.first();
}

/** Waits until our message `text` shows `have` of `of` members have it. */
async function delivered(user, gid, text, have, of, timeout = 20000) {
  await user.page.waitForFunction(([g, t, h, o]) => [...document.querySelectorAll(`.group-pane[data-group="${g}"] .msg-out`)]
    .some((m) => m.querySelector('.msg-text')?.textContent === t && m.dataset.have === String(h) && m.dataset.of === String(o)),
  [gid, text, have, of], { timeout });
}

/** `user` befriends `alice`, and each holds the other as a contact (their rendezvous secrets exchanged). */
async function befriendAsContacts(user, alice) {
  await befriend(user, alice);
  await waitForContact(user, alice.id);
  await waitForContact(alice, user.id);
}

/**
 * Alice (the admin-to-be; a new user unless `alice` is given) befriended with a new user for each of `names`;
 * `contacts`: each of them also her contact.
 */
async function friendsOfAlice(srv, names, { alice, contacts = false } = {}) {
  const admin = alice ?? await newChatUser(harness.browser, srv, { name: 'Alice' });
  const others = [];
  for (const name of names) {
    const user = await newChatUser(harness.browser, srv, { name });
    await (contacts ? befriendAsContacts : befriend)(user, admin);
    others.push(user);
  }
  return { alice: admin, others };
}

/** `admin` creates a group of `members`; each member opens it and every one lists them all, with their keys. */
async function groupJoinedByAll(admin, name, members) {
  const gid = await createGroup(admin, name, members);
  for (const user of members) await openGroup(user, gid);
  for (const user of [admin, ...members]) await membersReady(user, gid, members.length + 1);
  return gid;
}

/** The JSON text of the first member list (`group` envelope) handed to `member`, a gpgUser, read with its key. */
function listHandedTo(member) {
  return jsonFrames(member).filter((f) => f.direction === 'received' && f.json.type === 'MESSAGE' && f.json.payload)
    .map((f) => decryptAndVerify(member.home, { payload: f.json.payload, passphrase: GPG_PASSPHRASE }).plaintext)
    .find((text) => text.includes('"kind":"group"'));
}

/**
 * The server, through `member.mitm`, hands `member`'s group handle of today (derived here from the group's
 * `secret`, independently of the client) the envelope `text`, encrypted to `member` and signed by `signer`, a
 * gpgUser who imports the key `member` sent with its friend request. Returns that handle.
 */
function injectSigned(signer, member, secret, text) {
  importKey(signer.home, jsonFrames(member).find((f) => f.direction === 'sent' && f.json.type === 'FRIEND_REQUEST').json.public_key);
  const payload = encryptAndSign(signer.home, { text, recipient: member.fingerprint, signer: signer.fingerprint, passphrase: GPG_PASSPHRASE });
  const day = new Date().toISOString().slice(0, 10);
  const handle = createHmac('sha256', Buffer.from(secret, 'base64url')).update(`secchat-group-v1\n${member.fingerprint}\n${day}`).digest('base64url');
  member.mitm.inject({ type: 'MESSAGE', handle, payload, ts: Date.now() });
  return handle;
}

describe('groups', { timeout: 180000 }, () => {
  test('a group of three: created from friends, messages both ways verified with the sender\'s name, "2 of 2 have it"', async () => {
    const srv = await harness.server();
    const { alice, others: [bob, carol] } = await friendsOfAlice(srv, ['Bob', 'Carol']);
    const gid = await createGroup(alice, 'Weekend', [bob, carol]);
    await openGroup(bob, gid);
    await openGroup(carol, gid);
    // Bob and Carol are not friends of each other: the admin's gkeys gave them each other's keys.
    for (const user of [bob, carol]) {
      await user.page.waitForFunction((g) => [...document.querySelectorAll(`.group-pane[data-group="${g}"] .group-member`)]
        .filter((m) => m.dataset.trust !== 'missing').length === 3, gid);
    }
    await writeToGroup(alice, gid, 'hello group');
    for (const user of [bob, carol]) {
      const line = await groupMessage(user, gid, 'hello group');
      assert.equal(await line.getAttribute('data-verified'), 'true');
      assert.equal(await line.locator('.msg-who').textContent(), 'Alice');
    }
    await delivered(alice, gid, 'hello group', 2, 2);
    await writeToGroup(bob, gid, 'hi from Bob');
    for (const user of [alice, carol]) {
      const line = await groupMessage(user, gid, 'hi from Bob');
      assert.equal(await line.getAttribute('data-verified'), 'true');
      assert.equal(await line.locator('.msg-who').textContent(), 'Bob');
    }
    await delivered(bob, gid, 'hi from Bob', 2, 2);

    // One upload to two handles (§11), and the text never on the wire.
    const uploads = jsonFrames(bob).filter((f) => f.direction === 'sent' && f.json.type === 'MESSAGE' && Array.isArray(f.json.handles));
    assert.equal(uploads.length, 1);
    assert.equal(uploads[0].json.handles.length, 2);
    for (const user of [alice, bob, carol]) assert.ok(!user.frames.some((f) => f.text.includes('hi from Bob') || f.text.includes('Weekend')));

    // The "New group" dialog: no serious axe violation, keyboard focus in the name field, Escape closes it.
    await alice.page.click('#new-group');
    await alice.page.locator('#new-group-name:focus').waitFor();
    assert.deepEqual(await seriousViolations(alice.page), [], 'axe with the "New group" dialog open');
    await alice.page.keyboard.press('Escape');
    await alice.page.locator('dialog.new-group').waitFor({ state: 'detached' });
    for (const viewport of [DESKTOP, PHONE]) {
      await alice.page.setViewportSize(viewport);
      if (viewport === PHONE) await alice.page.locator('.group-pane:not([hidden])').waitFor();
      assert.deepEqual(await seriousViolations(alice.page), [], `axe at ${viewport.width} px`);
      await screenshot(alice.page, `groups-${viewport.width}`);
    }
    for (const user of [alice, bob, carol]) await assertClean(user);
    for (const user of [alice, bob, carol]) await user.context.close();
  });

  test('a fourth member sees only what follows; a removed member\'s key cannot open what follows; gpg reads a group message', async () => {
    const srv = await harness.server();
    const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
    const bob = await gpgUser(srv, 'Bob');
    const carol = await gpgUser(srv, 'Carol');
    const dave = await newChatUser(harness.browser, srv, { name: 'Dave' });
    for (const user of [bob, carol, dave]) await befriend(user, alice);
    for (const user of [bob, carol]) for (const key of keysReceived(user)) importKey(user.home, key); // Alice's key, to verify her
    const gid = await createGroup(alice, 'Project', [bob, carol]);
    await openGroup(bob, gid);
    await openGroup(carol, gid);
    await membersReady(bob, gid, 3);
    await membersReady(carol, gid, 3);
    await writeToGroup(alice, gid, 'before Dave');
    await groupMessage(bob, gid, 'before Dave');
    await groupMessage(carol, gid, 'before Dave');

    // Dave is added: he gets the version and every key by his contact with Alice, the others his key.
    await alice.page.selectOption(`#group-add-${gid}`, dave.id);
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-add button`);
    await openGroup(dave, gid);
    for (const user of [alice, bob, carol, dave]) await membersReady(user, gid, 4);
    await bob.page.locator(`.group-pane[data-group="${gid}"] .msg-system[data-what="changed"]`).filter({ hasText: 'added Dave' }).waitFor();
    await writeToGroup(bob, gid, 'after Dave');
    for (const user of [alice, carol, dave]) assert.equal(await (await groupMessage(user, gid, 'after Dave')).getAttribute('data-verified'), 'true');
    await delivered(bob, gid, 'after Dave', 3, 3);
    assert.equal(await dave.page.locator(`.group-pane[data-group="${gid}"] .msg-text`, { hasText: 'before Dave' }).count(), 0, 'Dave sees only what came after he joined');

    // GnuPG: Bob's one upload decrypts with Bob's key and with Carol's, signed by Bob.
    const afterDave = groupUploads(bob).at(-1);
    assert.equal(afterDave.handles.length, 3);
    for (const user of [bob, carol]) {
      importKey(user.home, bob.key.publicArmored);
      const opened = decryptAndVerify(user.home, { payload: afterDave.payload, passphrase: GPG_PASSPHRASE });
      assert.equal(opened.status, 0, opened.stderr);
      assert.equal(opened.signerPrimary, bob.fingerprint);
      const envelope = JSON.parse(opened.plaintext);
      assert.deepEqual([envelope.kind, envelope.gid, envelope.text, envelope.ver], ['gtext', gid, 'after Dave', 2]);
    }

    // Carol is removed (a new secret): what Bob writes next is neither sent to her nor readable with her key.
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-member[data-member="${carol.fingerprint}"] button.btn-danger`);
    for (const user of [alice, bob, dave]) await membersReady(user, gid, 3);
    // Carol's client is told (by her old handle, to her key alone) and stops: no composer, nothing listened on.
    await carol.page.locator(`.group-pane[data-group="${gid}"][data-status="removed"]`).waitFor();
    assert.match(await carol.page.locator(`.group-pane[data-group="${gid}"] .msg-system[data-what="removed_me"]`).textContent(), /removed you/);
    assert.equal(await carol.page.locator(`.group-pane[data-group="${gid}"] .composer`).isHidden(), true);
    await writeToGroup(bob, gid, 'after Carol');
    for (const user of [alice, dave]) assert.equal(await (await groupMessage(user, gid, 'after Carol')).getAttribute('data-verified'), 'true');
    const afterCarol = groupUploads(bob).at(-1);
    assert.equal(afterCarol.handles.length, 2);
    const byCarol = decryptAndVerify(carol.home, { payload: afterCarol.payload, passphrase: GPG_PASSPHRASE });
    assert.notEqual(byCarol.status, 0, 'Carol\'s key cannot decrypt a message sent after her removal');
    assert.equal(byCarol.plaintext, '');
    const byBob = decryptAndVerify(bob.home, { payload: afterCarol.payload, passphrase: GPG_PASSPHRASE });
    assert.equal(JSON.parse(byBob.plaintext).ver, 3);
    assert.equal(await carol.page.locator('.msg-text', { hasText: 'after Carol' }).count(), 0);

    // Alice makes Bob an admin, and Bob renames the group; Dave leaves: everyone left sees all of it.
    await alice.page.getByRole('button', { name: /^make admin: Bob/ }).click();
    await bob.page.locator(`.group-pane[data-group="${gid}"] .group-rename`).waitFor();
    assert.equal(await alice.page.getAttribute(`.group-member[data-member="${bob.fingerprint}"]`, 'data-admin'), 'true');
    await bob.page.fill(`#group-rename-${gid}`, 'Project (done)');
    await bob.page.click(`.group-pane[data-group="${gid}"] .group-rename button`);
    for (const user of [alice, dave]) {
      await user.page.waitForFunction((g) => document.querySelector(`.group-pane[data-group="${g}"] .chat-title`)?.textContent === 'Project (done)', gid);
    }
    await dave.page.locator(`.group-pane[data-group="${gid}"] .chat-head-actions`).getByRole('button', { name: 'Leave group' }).click();
    await dave.page.locator('dialog').getByRole('button', { name: 'Leave group' }).click();
    await dave.page.locator(`.group-pane[data-group="${gid}"][data-status="left"]`).waitFor();
    for (const user of [alice, bob]) {
      await user.page.locator(`.group-pane[data-group="${gid}"] .msg-system[data-what="member_left"]`).filter({ hasText: 'Dave left the group' }).waitFor();
    }
    // Dave takes it off his list; Alice's next change removes him (with a new secret, as any removal).
    await dave.page.getByRole('button', { name: 'Remove this group from your list' }).click();
    await dave.page.locator(`.group-item[data-group="${gid}"]`).waitFor({ state: 'detached' });
    await alice.page.fill(`#group-rename-${gid}`, 'Project (two)');
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-rename button`);
    for (const user of [alice, bob]) await membersReady(user, gid, 2);
    await writeToGroup(bob, gid, 'just us two');
    assert.equal(await (await groupMessage(alice, gid, 'just us two')).getAttribute('data-verified'), 'true');
    assert.equal(groupUploads(bob).at(-1).handles.length, 1);
    for (const user of [alice, bob, carol, dave]) await assertClean(user);
    for (const user of [alice, bob, carol, dave]) await user.context.close();
  });

  test('a member whose tab is closed while the group writes gets every message from the mailbox on return, verified; the group survives the reload', async () => {
    const srv = await harness.server();
    const users = {};
    for (const name of ['Alice', 'Bob', 'Carol']) {
      users[name] = await openUser(harness.browser, srv, { name });
      await generateKey(users[name], { remember: true });
      await enterChat(users[name]);
    }
    const { Alice: a, Bob: b, Carol: c } = users;
    for (const user of [b, c]) await befriendAsContacts(user, a);
    const gid = await groupJoinedByAll(a, 'Mailbox', [b, c]);
    await bookSaved(c);

    const reopen = await closeTab(c, srv);
    const texts = ['while Carol is away 1', 'while Carol is away 2'];
    for (const text of texts) await writeToGroup(a, gid, text);
    for (const text of texts) await groupMessage(b, gid, text);
    for (const text of texts) await delivered(a, gid, text, 1, 2);

    await reopen();
    await openGroup(c, gid);
    for (const text of texts) assert.equal(await (await groupMessage(c, gid, text)).getAttribute('data-verified'), 'true');
    const shown = await c.page.locator(`.group-pane[data-group="${gid}"] .msg-in .msg-text`).allTextContents();
    assert.deepEqual(shown, texts, 'in order, once each');
    for (const text of texts) await delivered(a, gid, text, 2, 2);
    // And Carol can still write to the group after the reload, with the keys her contact book kept.
    await writeToGroup(c, gid, 'back again');
    for (const user of [a, b]) assert.equal(await (await groupMessage(user, gid, 'back again')).getAttribute('data-verified'), 'true');
    for (const user of [a, b, c]) await assertClean(user);
    for (const user of [a, b, c]) await user.context.close();
  });
  test('a group message the server swallowed (and acknowledged) is sent again after the writer reloads, to those who have not confirmed it', async () => {
    const srv = await harness.server();
    const alice = await interceptedChatUser(harness.browser, srv, { name: 'Alice', remember: true });
    const { mitm } = alice;
    const { others } = await friendsOfAlice(srv, ['Bob', 'Carol'], { alice, contacts: true });
    const gid = await groupJoinedByAll(alice, 'Lossy', others);
    mitm.strip = (frame) => frame.type === 'MESSAGE' && Array.isArray(frame.handles);
    await writeToGroup(alice, gid, 'swallowed once');
    await delivered(alice, gid, 'swallowed once', 0, 2);
    assert.equal(mitm.stripped.length, 1);
    await bookSaved(alice);
    mitm.strip = null;
    await reloadAndUnlock(alice);
    await openGroup(alice, gid);
    for (const user of others) assert.equal(await (await groupMessage(user, gid, 'swallowed once')).getAttribute('data-verified'), 'true');
    await delivered(alice, gid, 'swallowed once', 2, 2);
    for (const user of [alice, ...others]) await assertClean(user);
    for (const user of [alice, ...others]) await user.context.close();
  });

  test('a new member whose version and keys were lost is handed them again (after the admin reloads) until it confirms', async () => {
    const srv = await harness.server();
    const alice = await interceptedChatUser(harness.browser, srv, { name: 'Alice', remember: true });
    const { mitm } = alice;
    const { others: [bob, dave] } = await friendsOfAlice(srv, ['Bob', 'Dave'], { alice, contacts: true });
    const gid = await groupJoinedByAll(alice, 'Handed', [bob]);
    const row = (user, fp) => user.page.locator(`.group-pane[data-group="${gid}"] .group-member[data-member="${fp}"]`);
    await row(alice, bob.fingerprint).and(alice.page.locator('[data-joined="true"]')).waitFor();

    // Alice adds Dave; the server swallows (and acknowledges) the version and the keys sent to his contact route.
    mitm.strip = (frame) => frame.type === 'MESSAGE' && !Array.isArray(frame.handles) && frame.mailbox !== false && mitm.stripped.length < 2;
    await alice.page.selectOption(`#group-add-${gid}`, dave.id);
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-add button`);
    await membersReady(bob, gid, 3);
    // Dave is followed as not joined once both went (the handover is recorded after the handing).
    await row(alice, dave.fingerprint).and(alice.page.locator('[data-joined="false"]')).waitFor({ state: 'attached' });
    assert.equal(mitm.stripped.length, 2, 'the version and one gkeys to Dave');
    mitm.strip = null;
    for (const viewport of [DESKTOP, PHONE]) {
      await alice.page.setViewportSize(viewport);
      if (viewport === PHONE) await alice.page.locator(`.group-pane[data-group="${gid}"] .details-toggle`).click();
      const joining = row(alice, dave.fingerprint).locator('.member-joining');
      await joining.waitFor({ state: 'visible' });
      assert.equal(await joining.textContent(), '· not joined yet');
    }
    await alice.page.setViewportSize(DESKTOP);
    assert.equal(await dave.page.locator(`.group-item[data-group="${gid}"]`).count(), 0, 'Dave has not got the group');
    await bookSaved(alice);

    // Alice reloads: the open handover comes back from the contact book, and the new connection hands the group
    // to Dave again. He joins, with every key, and confirms: Alice stops.
    await reloadAndUnlock(alice);
    await openGroup(alice, gid);
    await openGroup(dave, gid);
    await membersReady(dave, gid, 3);
    await row(alice, dave.fingerprint).and(alice.page.locator('[data-joined="true"]')).waitFor();
    assert.equal(await row(alice, dave.fingerprint).locator('.member-joining').count(), 0);
    await writeToGroup(dave, gid, 'Dave is in');
    for (const user of [alice, bob]) assert.equal(await (await groupMessage(user, gid, 'Dave is in')).getAttribute('data-verified'), 'true');
    for (const user of [alice, bob, dave]) await assertClean(user);
    for (const user of [alice, bob, dave]) await user.context.close();
  });

  test('the only admin cannot leave: the pane says why (1280 and 360 px) and nothing is sent; once another is admin, leaving works', async () => {
    const srv = await harness.server();
    const { alice, others: [bob] } = await friendsOfAlice(srv, ['Bob']);
    const gid = await groupJoinedByAll(alice, 'Kept', [bob]);
    const pane = alice.page.locator(`.group-pane[data-group="${gid}"]`);
    const error = pane.locator('.form-error');
    const uploads = () => groupUploads(alice).length;
    for (const viewport of [DESKTOP, PHONE]) {
      await alice.page.setViewportSize(viewport);
      if (viewport === PHONE) await pane.locator('.details-toggle').click();
      const before = uploads();
      await error.evaluate((e) => { e.textContent = ''; }); // so that the wait below sees this click's words
      await pane.locator('.chat-head-actions').getByRole('button', { name: 'Leave group' }).click();
      await error.filter({ hasText: 'only admin' }).waitFor({ state: 'visible' });
      assert.equal(await alice.page.locator('dialog').count(), 0, 'not asked to confirm what cannot be done');
      assert.match(await error.textContent(), /You are this group's only admin: make another member an admin before you leave/);
      assert.equal(await pane.getAttribute('data-status'), 'member');
      assert.equal(uploads(), before, 'no gleave sent');
      await screenshot(alice.page, `groups-last-admin-${viewport.width}`);
    }
    await alice.page.setViewportSize(DESKTOP);
    await alice.page.getByRole('button', { name: /^make admin: Bob/ }).click();
    await bob.page.locator(`.group-pane[data-group="${gid}"] .group-rename`).waitFor();
    await pane.locator('.chat-head-actions').getByRole('button', { name: 'Leave group' }).click();
    await alice.page.locator('dialog').getByRole('button', { name: 'Leave group' }).click();
    await alice.page.locator(`.group-pane[data-group="${gid}"][data-status="left"]`).waitFor();
    await bob.page.locator(`.group-pane[data-group="${gid}"] .msg-system[data-what="member_left"]`).waitFor();
    for (const user of [alice, bob]) await assertClean(user);
    for (const user of [alice, bob]) await user.context.close();
  });

  test('a copy of a group message the server reports undelivered is counted on the message: "1 of 2 have it · 1 could not be reached"', async () => {
    const srv = await harness.server();
    const alice = await interceptedChatUser(harness.browser, srv, { name: 'Alice' });
    const { mitm } = alice;
    const { others } = await friendsOfAlice(srv, ['Bob', 'Carol'], { alice });
    const [bob, carol] = others;
    const gid = await groupJoinedByAll(alice, 'Reach', others);
    await carol.context.close(); // Carol is away: no receipt from her
    await writeToGroup(alice, gid, 'who has it');
    await groupMessage(bob, gid, 'who has it');
    await delivered(alice, gid, 'who has it', 1, 2);
    // The server reports both copies of the upload undelivered (as it does per handle for a full mailbox): Bob's
    // receipt wins over his, Carol's is counted.
    const upload = mitm.fromPage.filter((f) => f.type === 'MESSAGE' && Array.isArray(f.handles)).at(-1);
    for (const handle of upload.handles) mitm.inject({ type: 'UNDELIVERED', handle, ref: upload.ref, reason: 'evicted' });
    const line = alice.page.locator(`.group-pane[data-group="${gid}"] .msg-out[data-unreached="1"]`);
    for (const viewport of [DESKTOP, PHONE]) {
      await alice.page.setViewportSize(viewport);
      await line.waitFor({ state: 'visible' });
      assert.equal(await line.locator('.msg-delivery').textContent(), '1 of 2 have it · 1 could not be reached');
    }
    for (const user of [alice, bob]) await assertClean(user);
    for (const user of [alice, bob]) await user.context.close();
  });
});


describe('what does not add up', { timeout: 180000 }, () => {
  test('a membership change signed by a member who is no admin, injected by the server, is refused and shown; the list stays', async () => {
    const srv = await harness.server();
    const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
    const bob = await interceptedChatUser(harness.browser, srv, { name: 'Bob' });
    const { mitm } = bob;
    const carol = await gpgUser(srv, 'Carol');
    for (const user of [bob, carol]) await befriend(user, alice);
    const gid = await groupJoinedByAll(alice, 'Honest', [bob, carol]);

    // Carol holds version 1 (Alice handed it to her): she reads it with her own key...
    for (const key of keysReceived(carol)) importKey(carol.home, key);
    const v1 = listHandedTo(carol);
    const list = JSON.parse(v1);
    assert.equal(list.ver, 1);
    // ...and signs a version 2 that makes her an admin, which the server hands to Bob's group handle.
    const hash = createHash('sha256').update(v1, 'utf8').digest('base64url');
    const forged = JSON.stringify({
      v: 1, kind: 'group', gid, ver: 2, prev: hash, ts: Date.now(), name: 'Hijacked', secret: list.secret,
      // Well formed (new admins' seniority is this version), so only the signer's rights refuse it.
      members: list.members.map((m) => (m.admin ? m : { ...m, admin: true, since: 2 })),
    });
    const handle = injectSigned(carol, bob, list.secret, forged);

    const pane = bob.page.locator(`.group-pane[data-group="${gid}"]`);
    const refused = pane.locator('.msg-system[data-what="change_refused"]');
    await refused.waitFor();
    assert.match(await refused.textContent(), /signed by someone not allowed to make it.*Carol/);
    assert.match(await pane.locator('.group-alerts').textContent(), /does not add up/);
    assert.equal(await bob.page.getAttribute(`.group-item[data-group="${gid}"]`, 'data-alerts'), '1');
    assert.equal(await pane.locator('.chat-title').textContent(), 'Honest', 'the name is not changed');
    assert.equal(await pane.locator('.group-member', { hasText: 'admin' }).count(), 1, 'Alice is still the only admin');

    // Messages the server hands Bob that do not add up: each shown flagged, never as a verified message.
    const eve = generateGpgKey(carol.home, { name: 'Eve', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
    const sealFrom = (signer, recipients, envelope) => {
      const result = carol.home.run(['--pinentry-mode', 'loopback', '--passphrase', GPG_PASSPHRASE, '--armor', '--trust-model', 'always',
        '--local-user', signer, ...recipients.flatMap((r) => ['--recipient', r]), '--sign', '--encrypt'], JSON.stringify(envelope));
      assert.equal(result.status, 0, result.stderr);
      return result.stdout;
    };
    const gtext = (seq, text, extra = {}) => ({ v: 1, kind: 'gtext', gid, ver: 1, list: hash, seq, ts: Date.now(), text, ...extra });
    const otherHash = createHash('sha256').update('another list').digest('base64url');
    mitm.inject({ type: 'MESSAGE', handle, ts: Date.now(), payload: sealFrom(carol.fingerprint, [bob.fingerprint], gtext(1, 'other list', { list: otherHash })) });
    mitm.inject({ type: 'MESSAGE', handle, ts: Date.now(), payload: sealFrom(carol.fingerprint, [bob.fingerprint, eve.fingerprint], gtext(2, 'also to Eve')) });
    mitm.inject({ type: 'MESSAGE', handle, ts: Date.now(), payload: sealFrom(eve.fingerprint, [bob.fingerprint], gtext(1, 'from Eve')) });
    const flagged = async (text, problem) => {
      const line = await groupMessage(bob, gid, text);
      assert.equal(await line.getAttribute('data-verified'), 'false');
      assert.equal(await line.getAttribute('data-problems'), problem);
    };
    await flagged('other list', 'members_disagree');
    assert.match(await pane.locator('.msg-in', { hasText: 'other list' }).textContent(), /Members disagree on who is in the group/);
    await flagged('also to Eve', 'extra_recipient');
    assert.match(await pane.locator('.msg-in', { hasText: 'also to Eve' }).textContent(), /also encrypted to someone outside the group/);
    // Signed by Carol, for this list, but written three weeks ago by her clock: shown with that time.
    const old = Date.now() - 21 * 24 * 60 * 60 * 1000;
    mitm.inject({ type: 'MESSAGE', handle, ts: Date.now(), payload: sealFrom(carol.fingerprint, [bob.fingerprint], gtext(1, 'written long ago', { ts: old })) });
    const late = await groupMessage(bob, gid, 'written long ago');
    assert.match(await late.textContent(), new RegExp(`Written ${new Date(old).toISOString().slice(0, 10)}.*an old message replayed, or a wrong clock`));
    await pane.locator('.msg-system[data-what="not_from_member"]').waitFor();
    assert.equal(await pane.locator('.msg-text', { hasText: 'from Eve' }).count(), 0, 'a message no member signed is not shown');

    // The group goes on under the version Alice signed.
    await writeToGroup(alice, gid, 'still honest');
    assert.equal(await (await groupMessage(bob, gid, 'still honest')).getAttribute('data-verified'), 'true');
    await screenshot(bob.page, 'groups-forged-change');
    for (const user of [alice, bob, carol]) await assertClean(user);
    for (const user of [alice, bob, carol]) await user.context.close();
  });
  test('an admin\'s second, different version under the same number is shown as an alert naming that admin, at 1280 and 360 px', async () => {
    const srv = await harness.server();
    const alice = await gpgUser(srv, 'Alice');
    const bob = await interceptedChatUser(harness.browser, srv, { name: 'Bob' });
    const { mitm } = bob;
    const carol = await gpgUser(srv, 'Carol');
    for (const user of [bob, carol]) await befriend(user, alice);
    const gid = await groupJoinedByAll(alice, 'Steady', [bob, carol]);
    // Alice renames the group through her page: version 2, which every member applies.
    await alice.page.fill(`#group-rename-${gid}`, 'Steady (2)');
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-rename button`);
    const title = (user) => user.page.waitForFunction((g) => document.querySelector(`.group-pane[data-group="${g}"] .chat-title`)?.textContent === 'Steady (2)', gid);
    await title(bob);
    const pane = bob.page.locator(`.group-pane[data-group="${gid}"]`);
    assert.equal(await pane.locator('.group-alerts').isHidden(), true, 'nothing to show yet');

    // Alice's key also signs another version 2 on version 1 (the text Carol was handed), which the server
    // hands to Bob's group handle.
    for (const key of keysReceived(carol)) importKey(carol.home, key);
    const v1 = listHandedTo(carol);
    const list = JSON.parse(v1);
    const other = JSON.stringify({
      v: 1, kind: 'group', gid, ver: 2, prev: createHash('sha256').update(v1, 'utf8').digest('base64url'), ts: Date.now(), name: 'Steady (other)', secret: list.secret, members: list.members,
    });
    injectSigned(alice, bob, list.secret, other);

    await pane.locator('.msg-system[data-what="equivocation"]').waitFor();
    for (const viewport of [DESKTOP, PHONE]) {
      await bob.page.setViewportSize(viewport);
      const alerts = pane.locator('.group-alerts');
      await alerts.waitFor({ state: 'visible' });
      assert.equal(await alerts.getAttribute('role'), 'alert');
      assert.match(await alerts.textContent(), /Alice <alice@example.org> signed two different versions of the member list under the same number/);
      assert.equal(await bob.page.getAttribute(`.group-item[data-group="${gid}"]`, 'data-alerts'), '1');
      await screenshot(bob.page, `groups-equivocation-${viewport.width}`);
    }
    // Not "two admins at once": one admin signed both.
    assert.equal(await pane.locator('.msg-system[data-what="conflict"]').count(), 0);
    for (const user of [alice, bob, carol]) await assertClean(user);
    for (const user of [alice, bob, carol]) await user.context.close();
  });
  test('a member\'s key offered changed (same fingerprint, other packets) is flagged for every member who is offered it; the held key stays', async () => {
    const srv = await harness.server();
    const alice = await gpgUser(srv, 'Alice');
    const watched = [];
    for (const name of ['Bob', 'Dave']) watched.push(await interceptedChatUser(harness.browser, srv, { name }));
    const carol = await gpgUser(srv, 'Carol');
    for (const user of [...watched, carol]) await befriend(user, alice);
    const gid = await groupJoinedByAll(alice, 'Keys', [...watched, carol]);

    // Carol's key with another user ID: the same fingerprint, other packets.
    const changed = carol.home.run(['--pinentry-mode', 'loopback', '--passphrase', GPG_PASSPHRASE, '--quick-add-uid', carol.fingerprint, 'Carol Other <other@example.org>']);
    assert.equal(changed.status, 0, changed.stderr);
    const carolChanged = carol.home.run(['--armor', '--export', carol.fingerprint]).stdout;
    // Alice (an admin) signs a gkeys with it; the server hands it to each member's group handle.
    const v1 = JSON.parse(listHandedTo(carol));
    for (const user of watched) {
      const envelope = JSON.stringify({ v: 1, kind: 'gkeys', gid, ver: 1, ts: Date.now(), keys: [carolChanged] });
      injectSigned(alice, user, v1.secret, envelope);
    }
    for (const user of watched) {
      const pane = user.page.locator(`.group-pane[data-group="${gid}"]`);
      await pane.locator(`.group-member[data-member="${carol.fingerprint}"][data-trust="changed"]`).waitFor();
      assert.match(await pane.locator('.msg-system[data-what="key_changed"]').textContent(), /key changed/);
      assert.match(await pane.locator('.group-alerts').textContent(), /key changed/);
    }
    // The key held before stays in use: Carol still reads what Bob writes.
    await writeToGroup(watched[0], gid, 'after the offer');
    assert.equal(await (await groupMessage(carol, gid, 'after the offer')).getAttribute('data-verified'), 'true');
    for (const user of [alice, ...watched, carol]) await assertClean(user);
    for (const user of [alice, ...watched, carol]) await user.context.close();
  });
});

/** Waits until no CSS transition runs on the page (the side panel slides after a resize). */
const settled = (page) => page.waitForFunction(() => document.getAnimations().every((a) => !(a instanceof CSSTransition) || a.playState !== 'running'));

describe('keys replaced and admins at once', { timeout: 180000 }, () => {
  test('an admin gives a member their new key: every member sees that member as "key changed", not a removal and an addition (1280 and 360 px)', async () => {
    const srv = await harness.server();
    const { alice, others: [bob, carol] } = await friendsOfAlice(srv, ['Bob', 'Carol']);
    const gid = await groupJoinedByAll(alice, 'Renewed', [bob, carol]);
    // Bob's new key: a new tab, a new key with the same name, befriended with Alice (who is told the name was
    // used before by another key).
    const bob2 = await newChatUser(harness.browser, srv, { name: 'Bob' });
    await befriend(bob2, alice);
    const row = (user, fp) => user.page.locator(`.group-pane[data-group="${gid}"] .group-member[data-member="${fp}"]`);
    await openGroup(alice, gid);
    await row(alice, bob.fingerprint).getByRole('button', { name: 'Update Bob\'s key in the group to their new one' }).click();
    await openGroup(bob2, gid);
    for (const user of [alice, carol, bob2]) await membersReady(user, gid, 3);
    for (const user of [alice, carol]) {
      const pane = user.page.locator(`.group-pane[data-group="${gid}"]`);
      await row(user, bob2.fingerprint).and(user.page.locator('[data-trust="changed"]')).waitFor({ state: 'attached' });
      assert.equal(await row(user, bob.fingerprint).count(), 0, 'the old key is gone from the list');
      assert.equal(await row(user, bob2.fingerprint).locator('.member-trust').textContent(), '· key changed');
      assert.match(await pane.locator('.msg-system[data-what="key_replaced"]').textContent(), /^Bob has a new key: .* replaced their old one \(fingerprint ending .{8}\)/);
      const changed = await pane.locator('.msg-system[data-what="changed"]').allTextContents();
      assert.match(changed.at(-1), /^(Alice|You) gave Bob a new key\.$/, 'neither "removed Bob" nor "added Bob"');
    }
    // Bob's old key is told it was removed; his new key writes and reads in the group.
    await bob.page.locator(`.group-pane[data-group="${gid}"][data-status="removed"]`).waitFor();
    await writeToGroup(carol, gid, 'welcome back, Bob');
    assert.equal(await (await groupMessage(bob2, gid, 'welcome back, Bob')).getAttribute('data-verified'), 'true');
    for (const viewport of [DESKTOP, PHONE]) {
      await carol.page.setViewportSize(viewport);
      if (viewport === PHONE) await carol.page.locator(`.group-pane[data-group="${gid}"] .details-toggle`).click();
      await row(carol, bob2.fingerprint).locator('.member-trust').waitFor({ state: 'visible' });
      await settled(carol.page);
      await screenshot(carol.page, `groups-key-replaced-${viewport.width}`);
    }
    for (const user of [alice, bob, carol, bob2]) await assertClean(user);
    for (const user of [alice, bob, carol, bob2]) await user.context.close();
  });

  test('two admins change the group at once: the less senior one\'s change is redone on top of the other\'s, and every member ends with both (1280 and 360 px)', async () => {
    const srv = await harness.server();
    const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
    const bob = await interceptedChatUser(harness.browser, srv, { name: 'Bob' });
    const { mitm } = bob;
    const carol = await newChatUser(harness.browser, srv, { name: 'Carol' });
    for (const user of [bob, carol]) await befriend(user, alice);
    const gid = await groupJoinedByAll(alice, 'Together', [bob, carol]);
    await alice.page.getByRole('button', { name: /^make admin: Bob/ }).click();
    await bob.page.locator(`.group-pane[data-group="${gid}"] .group-rename`).waitFor();
    const pane = (user) => user.page.locator(`.group-pane[data-group="${gid}"]`);
    const carolRow = (user) => pane(user).locator(`.group-member[data-member="${carol.fingerprint}"]`);

    // The server holds what comes to Bob's handles while Alice (senior) renames the group and Bob, not knowing,
    // makes Carol an admin: two versions 3 on version 2.
    const held = [];
    mitm.rewrite = (frame) => {
      if (frame.type === 'MESSAGE' && typeof frame.handle === 'string') {
        held.push(frame);
        return null;
      }
      return frame;
    };
    await alice.page.fill(`#group-rename-${gid}`, 'Alpha');
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-rename button`);
    await carol.page.waitForFunction((g) => document.querySelector(`.group-pane[data-group="${g}"] .chat-title`)?.textContent === 'Alpha', gid);
    await pane(bob).getByRole('button', { name: /^make admin: Carol/ }).click();
    await carolRow(bob).and(bob.page.locator('[data-admin="true"]')).waitFor();
    // Alice's version wins where Bob's arrives second: Alice and Carol keep hers.
    for (const user of [alice, carol]) await pane(user).locator('.msg-system[data-what="conflict"]').waitFor();
    assert.equal(await carolRow(alice).getAttribute('data-admin'), 'false');
    assert.ok(held.length > 0, 'Alice\'s version was held from Bob');
    mitm.rewrite = null;
    for (const frame of held) mitm.inject(frame);

    // Bob's page drops its own version for Alice's and makes its change again on top of it: everyone ends with both.
    const redone = pane(bob).locator('.msg-system[data-what="redone"]');
    await redone.waitFor();
    assert.equal(await redone.textContent(), 'Your change was redone after Alice\'s: two admins changed the group at once and theirs was kept, so yours was made again on top of it.');
    for (const user of [alice, bob, carol]) {
      await user.page.waitForFunction(([g, fp]) => document.querySelector(`.group-pane[data-group="${g}"] .chat-title`)?.textContent === 'Alpha'
        && document.querySelector(`.group-pane[data-group="${g}"] .group-member[data-member="${fp}"]`)?.dataset.admin === 'true', [gid, carol.fingerprint]);
    }
    await carol.page.locator(`.group-pane[data-group="${gid}"] .group-rename`).waitFor();
    assert.equal(await pane(bob).locator('.msg-system[data-what="not_redone"]').count(), 0);
    assert.equal(await pane(carol).locator('.msg-system[data-what="change_refused"]').count(), 0, 'nothing refused');
    for (const viewport of [DESKTOP, PHONE]) {
      await bob.page.setViewportSize(viewport);
      await redone.waitFor({ state: 'visible' });
      await settled(bob.page);
      const box = await redone.boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= viewport.width, `the line fits at ${viewport.width} px`);
      await screenshot(bob.page, `groups-redone-${viewport.width}`);
    }
    for (const user of [alice, bob, carol]) await assertClean(user);
    for (const user of [alice, bob, carol]) await user.context.close();
  });
});

describe('invitations', { timeout: 180000 }, () => {
  test('after "Remove from list", a replay of the invitation held then does not join again; an admin adding us back does', async () => {
    const srv = await harness.server();
    const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
    const bob = await interceptedChatUser(harness.browser, srv, { name: 'Bob' });
    const { mitm } = bob;
    const carol = await newChatUser(harness.browser, srv, { name: 'Carol' });
    for (const user of [bob, carol]) await befriend(user, alice);
    const before = mitm.toPage.length;
    const gid = await groupJoinedByAll(alice, 'First', [bob, carol]);
    // What handed Bob the group (the version and the keys, from his contact with Alice).
    const invitation = mitm.toPage.slice(before).filter((f) => f.type === 'MESSAGE');
    assert.ok(invitation.length >= 2);
    const pane = bob.page.locator(`.group-pane[data-group="${gid}"]`);
    await pane.locator('.chat-head-actions').getByRole('button', { name: 'Leave group' }).click();
    await bob.page.locator('dialog').getByRole('button', { name: 'Leave group' }).click();
    await bob.page.locator(`.group-pane[data-group="${gid}"][data-status="left"]`).waitFor();
    await alice.page.locator(`.group-pane[data-group="${gid}"] .msg-system[data-what="member_left"]`).waitFor();
    await bob.page.getByRole('button', { name: 'Remove this group from your list' }).click();
    await bob.page.locator(`.group-item[data-group="${gid}"]`).waitFor({ state: 'detached' });

    // The server replays the invitation; then Alice renames the group (removing Bob, who left) and adds him back.
    for (const frame of invitation) mitm.inject(frame);
    await alice.page.fill(`#group-rename-${gid}`, 'Second');
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-rename button`);
    await membersReady(carol, gid, 2);
    await alice.page.selectOption(`#group-add-${gid}`, bob.id);
    await alice.page.click(`.group-pane[data-group="${gid}"] .group-add button`);
    await openGroup(bob, gid);
    await membersReady(bob, gid, 3);
    assert.equal(await pane.locator('.chat-title').textContent(), 'Second', 'the version Alice added him back in, not the replayed one');
    assert.equal(await pane.locator('.msg-system[data-what="joined"]').count(), 1, 'joined once');
    await writeToGroup(carol, gid, 'Bob is back');
    assert.equal(await (await groupMessage(bob, gid, 'Bob is back')).getAttribute('data-verified'), 'true');
    for (const user of [alice, bob, carol]) await assertClean(user);
    for (const user of [alice, bob, carol]) await user.context.close();
  });

  test('one contact cannot fill every group slot: a ninth group from the same contact is refused, in words (1280 and 360 px)', async () => {
    const srv = await harness.server();
    const { alice, others: [bob] } = await friendsOfAlice(srv, ['Bob']);
    for (let i = 1; i <= 8; i += 1) await createGroup(alice, `Group ${i}`, [bob]);
    await bob.page.waitForFunction(() => document.querySelectorAll('.group-item').length === 8);
    await createGroup(alice, 'Group 9', [bob]);
    const notice = bob.page.locator('[data-notice="groups-full"]').filter({ hasText: 'the most SecChat takes from one contact' }).first();
    for (const viewport of [DESKTOP, PHONE]) {
      await bob.page.setViewportSize(viewport);
      await notice.waitFor({ state: 'visible' });
      assert.match(await notice.textContent(), /Alice.* added you to another group, but 8 of your groups came from them already/);
      await screenshot(bob.page, `groups-contact-full-${viewport.width}`);
    }
    assert.equal(await bob.page.locator('.group-item').count(), 8, 'the ninth was not joined');
    for (const user of [alice, bob]) await assertClean(user);
    for (const user of [alice, bob]) await user.context.close();
  });
});

/** Both sides of a friendship became contacts (each has the other's rendezvous secret). */
async function waitForContact(user, friendKey) {
  await user.page.waitForFunction((key) => document.querySelector(`.friend[data-friend="${key}"]`)?.dataset.contact === 'true', friendKey, { timeout: 15000 });
}

/** The contact book on this device holds the state as it is now (no save due or running). */
async function bookSaved(user) {
  await user.page.waitForFunction(() => Boolean(localStorage.getItem('secchat.contacts.v1'))
    && document.querySelector('.panel.book')?.dataset.pending === 'false', null, { timeout: 15000 });
}
