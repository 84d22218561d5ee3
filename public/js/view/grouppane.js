// A group's pane in the main area: its header (name, status, the member list with each member's trust state,
// the admin's actions, leaving), what does not add up (alerts), the conversation and the composer. Names and
// texts are members' words and only ever become text nodes. DOM only.
import { confirmDialog, h, linkifiedText, sendOnEnter, setText, timeElement, toggleClass } from './dom.js';
import { groupCandidates } from './groups.js';
import { deliveryOf } from '../groupdelivery.js';
import { isRepresentableTime } from '../inbox.js';
import { current, isAdmin, leaveProblem, memberOf } from '../grouplist.js';
import { memberKeyStatus } from '../groupmessages.js';
import {
  GROUP_PROBLEM_TEXT, GROUP_TRUST_TEXT, LEAVE_PROBLEM_TEXT, deliveryText, groupLineText, memberName,
} from '../grouptext.js';
import { cleanName, friendLabel, labelText } from '../names.js';

/** A member's trust state: 'you', 'missing' (no key: cannot be written to), 'changed', 'verified' or 'unverified'. */
export function memberTrust(state, group, fp) {
  const me = group.list.me;
  if (fp === me) return 'you';
  const key = memberKeyStatus(group.list, group.messages).get(fp);
  if (key === 'missing') return 'missing';
  if (key === 'changed') return 'changed';
  const friend = [...state.friends.values()].find((f) => f.fingerprint === fp && f.status === 'friends');
  if (friend && friend.trust === 'changed') return 'changed';
  const verified = (friend && friend.trust === 'verified') || state.verifiedFingerprints.has(fp);
  // An admin gave this member a new key (groups.js keyChanges): changed until the user verifies the new one.
  if (group.keyChanges?.[fp] && !verified) return 'changed';
  return verified ? 'verified' : 'unverified';
}

const OUT_TEXT = { sending: 'sending…', sent: 'sent', error: 'not sent' };

export function createGroupPane(gid, actions) {
  const titleId = `group-title-${gid}`;
  const title = h('h2', { className: 'chat-title', id: titleId });
  const status = h('span', { className: 'presence-text small' });
  const members = h('ul', { className: 'group-members', 'aria-label': 'Members' });
  const alerts = h('div', { className: 'banner banner-danger group-alerts', role: 'alert', hidden: true });
  const addSelect = h('select', { className: 'input input-small', id: `group-add-${gid}` });
  const adminError = h('p', { className: 'form-error small', role: 'alert' });
  const report = async (run) => {
    setText(adminError, '');
    try {
      await run();
    } catch (error) {
      setText(adminError, error.message);
    }
  };
  const addForm = h('form', { className: 'inline-form group-add' },
    h('label', { htmlFor: `group-add-${gid}`, className: 'label small', text: 'Add a member' }), addSelect,
    h('button', { type: 'submit', className: 'btn btn-small', text: 'Add', 'aria-label': 'Add the chosen friend to the group' }));
  addForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (addSelect.value) report(() => actions.addGroupMember(gid, addSelect.value));
  });
  const renameInput = h('input', { type: 'text', className: 'input input-small', id: `group-rename-${gid}`, maxlength: '64', autocomplete: 'off' });
  const renameForm = h('form', { className: 'inline-form group-rename' },
    h('label', { htmlFor: `group-rename-${gid}`, className: 'label small', text: 'Group name' }), renameInput,
    h('button', { type: 'submit', className: 'btn btn-small', text: 'Rename' }));
  renameForm.addEventListener('submit', (event) => {
    event.preventDefault();
    report(() => actions.renameGroup(gid, renameInput.value));
  });
  const adminBox = h('div', { className: 'group-admin' }, addForm, renameForm);
  const leaveButton = h('button', { type: 'button', className: 'btn btn-small btn-danger', text: 'Leave group', onClick: () => onLeave() });
  const forgetButton = h('button', {
    type: 'button', className: 'btn btn-small', text: 'Remove from list', 'aria-label': 'Remove this group from your list',
    onClick: () => report(() => actions.forgetGroup(gid)),
  });
  // On a phone the header is one line; the members and actions open on demand (CSS shows them on wider screens).
  const detailsId = `group-details-${gid}`;
  const detailsToggle = h('button', {
    type: 'button', className: 'btn btn-small details-toggle', text: 'Members', 'aria-expanded': 'false', 'aria-controls': detailsId,
    onClick: () => {
      const open = !head.classList.contains('details-open');
      toggleClass(head, 'details-open', open);
      detailsToggle.setAttribute('aria-expanded', String(open));
    },
  });
  const head = h('header', { className: 'chat-head group-head' },
    h('div', { className: 'chat-head-main' }, title, status, detailsToggle),
    h('div', { className: 'group-details', id: detailsId }, members, adminBox, adminError, h('div', { className: 'chat-head-actions' }, leaveButton, forgetButton)));
  const list = h('ol', { className: 'log-list' });
  const log = h('div', { className: 'log', role: 'log', 'aria-live': 'polite', 'aria-labelledby': titleId }, list);
  const textarea = h('textarea', { className: 'input composer-input', id: `group-composer-${gid}`, rows: '1', placeholder: 'Write to the group…', autocomplete: 'off' });
  const note = h('p', { className: 'composer-note small', 'aria-live': 'polite' });
  const composer = h('form', { className: 'composer', 'aria-label': 'Write to the group' },
    h('label', { htmlFor: `group-composer-${gid}`, className: 'sr-only', text: 'Message to the group' }),
    textarea, h('button', { type: 'submit', className: 'btn btn-primary composer-send', text: 'Send', 'aria-label': 'Send to the group' }));
  const root = h('section', { className: 'chat-pane group-pane', 'data-group': gid, 'aria-labelledby': titleId }, head, alerts, log, note, composer);

  let current_ = null;
  async function onLeave() {
    // Refused before asking: the only admin must name another first (groupsync.js refuses it as well).
    const problem = current_ && current_.status === 'member' ? leaveProblem(current_.list) : null;
    if (problem) {
      setText(adminError, LEAVE_PROBLEM_TEXT[problem]);
      return;
    }
    const ok = await confirmDialog({
      title: 'Leave this group?', body: 'The others are told you left; you get nothing sent to the group after this.', confirmText: 'Leave group', danger: true,
    });
    if (ok) report(() => actions.leaveGroup(gid));
  }
  function send() {
    const text = textarea.value;
    if (!text.trim()) return;
    textarea.value = '';
    actions.sendGroupMessage(gid, text).catch((error) => {
      if (textarea.value === '') textarea.value = text;
      setText(note, error.message);
    });
  }
  sendOnEnter(composer, textarea, send);

  const lineViews = new Map(); // line id -> {element, key}

  function update(state, group) {
    current_ = group;
    const version = current(group.list);
    const me = group.list.me;
    setText(title, cleanName(version.name, 64));
    root.dataset.status = group.status;
    const statusText = group.status === 'member' ? `${version.members.length} members` : group.status === 'left' ? 'You left this group.' : 'You were removed from this group.';
    setText(status, ` ${statusText}`);
    const admin = group.status === 'member' && isAdmin(version, me);
    members.replaceChildren(...version.members.map((m) => memberItem(state, group, m, admin)));
    adminBox.hidden = !admin;
    if (admin) {
      const inGroup = new Set(version.members.map((m) => m.fp));
      const options = groupCandidates(state).filter((f) => !inGroup.has(f.fingerprint));
      const key = options.map((f) => f.id).join(',');
      if (addSelect.dataset.key !== key) {
        addSelect.replaceChildren(...options.map((f) => h('option', { value: f.id, text: labelText(friendLabel(f)) })));
        addSelect.dataset.key = key;
      }
      addForm.hidden = options.length === 0;
      if (document.activeElement !== renameInput) renameInput.value = version.name;
    }
    leaveButton.hidden = group.status !== 'member';
    forgetButton.hidden = group.status === 'member';
    alerts.hidden = group.alerts.length === 0;
    if (!alerts.hidden) {
      alerts.replaceChildren(
        h('p', { className: 'banner-title', text: '⚠ Something about this group does not add up' }),
        ...group.alerts.map((a) => h('p', { text: groupLineText(group, a, me) })),
        h('button', { type: 'button', className: 'btn btn-small', text: 'Dismiss', onClick: () => actions.dismissGroupAlerts(gid) }));
    }
    composer.hidden = group.status !== 'member';
    const keep = new Set(group.lines.map((l) => l.id));
    for (const [id, view] of lineViews) {
      if (!keep.has(id)) {
        view.element.remove();
        lineViews.delete(id);
      }
    }
    for (const line of group.lines) {
      const drawn = lineViews.get(line.id);
      const delivery = line.direction === 'out' ? deliveryOf(group.deliveries, line.seq) : null;
      const key = `${line.state}|${delivery ? `${delivery.have}/${delivery.of}/${delivery.unreached.length}` : ''}`;
      if (drawn && drawn.key === key) continue;
      const element = lineElement(group, line, me, delivery);
      if (drawn) drawn.element.replaceWith(element);
      else list.append(element);
      lineViews.set(line.id, { element, key });
    }
  }

  function memberItem(state, group, m, admin) {
    const trust = memberTrust(state, group, m.fp);
    // We handed them the group and they have not confirmed it yet (grouphandover.js: it is handed again).
    const joining = group.handovers.some((x) => x.fp === m.fp);
    const remove = admin && m.fp !== group.list.me
      ? h('button', {
        type: 'button', className: 'btn btn-tiny btn-danger', text: 'remove', 'aria-label': `Remove ${cleanName(m.name, 40)} from the group`,
        onClick: () => report(() => actions.removeGroupMember(group.gid, m.fp)),
      })
      : null;
    const name = cleanName(m.name, 40);
    const adminToggle = admin && m.fp !== group.list.me
      ? h('button', {
        type: 'button', className: 'btn btn-tiny', text: m.admin ? 'unmake admin' : 'make admin',
        'aria-label': m.admin ? `unmake admin: ${name}` : `make admin: ${name}`,
        onClick: () => report(() => actions.setGroupAdmin(group.gid, m.fp, !m.admin)),
      })
      : null;
    // A friend whose new key replaced this member's (model.js keyBefore): the admin may put it in the group.
    const successor = admin && m.fp !== group.list.me
      ? groupCandidates(state).find((f) => f.keyBefore === m.fp && !memberOf(current(group.list), f.fingerprint))
      : null;
    const updateKey = successor
      ? h('button', {
        type: 'button', className: 'btn btn-tiny', text: 'update key', 'aria-label': `Update ${name}'s key in the group to their new one`,
        onClick: () => report(() => actions.replaceGroupMemberKey(group.gid, m.fp, successor.id)),
      })
      : null;
    return h('li', {
      className: `group-member trust-${trust}`, 'data-member': m.fp, 'data-trust': trust, 'data-admin': String(m.admin), 'data-joined': String(!joining),
    },
      h('span', { className: 'member-name', text: m.fp === group.list.me ? `${cleanName(m.name, 40)} (you)` : cleanName(m.name, 40) }),
      m.admin ? h('span', { className: 'small muted', text: '· admin' }) : null,
      trust === 'you' ? null : h('span', { className: 'small member-trust', text: `· ${GROUP_TRUST_TEXT[trust]}` }),
      joining ? h('span', { className: 'small muted member-joining', text: '· not joined yet' }) : null,
      updateKey, adminToggle, remove);
  }

  return {
    root,
    update,
    focusComposer: () => textarea.focus(),
    get group() { return current_; },
  };
}

function lineElement(group, line, me, delivery) {
  if (line.direction === 'system') {
    return h('li', { className: `msg-system msg-system-${line.flagged ? 'warn' : 'info'}`, 'data-what': line.what },
      h('span', { text: groupLineText(group, line, me) }));
  }
  if (line.direction === 'out') {
    const counted = delivery ? deliveryText(delivery) : OUT_TEXT[line.state] || line.state;
    const missing = line.missing && line.missing.length
      ? h('p', { className: 'msg-flag msg-flag-warn', text: `⚠ Not sent to ${line.missing.map((fp) => memberName(group, fp, me)).join(', ')}: no key or address for them.` })
      : null;
    const element = h('li', { className: 'msg msg-out', 'data-state': line.state, 'data-seq': String(line.seq) },
      h('div', { className: 'msg-meta' }, h('span', { className: 'msg-who', text: 'you' }), timeElement(line.ts),
        h('span', { className: 'msg-state msg-delivery', text: counted })),
      h('p', { className: 'msg-text' }, linkifiedText(line.text)), missing);
    if (delivery) {
      element.dataset.have = String(delivery.have);
      element.dataset.of = String(delivery.of);
      element.dataset.unreached = String(delivery.unreached.length);
    }
    return element;
  }
  const flagged = line.problems.length > 0;
  const element = h('li', {
    className: `msg msg-in${flagged ? ' msg-flagged' : ''}`, 'data-verified': String(line.verified), 'data-problems': line.problems.join(' '),
    'data-from': line.from, 'data-seq': String(line.seq),
  },
  h('div', { className: 'msg-meta' }, h('span', { className: 'msg-who', text: memberName(group, line.from, me) }), timeElement(line.receivedAt),
    line.verified ? null : h('span', { className: 'msg-mark msg-mark-bad', text: '⚠ FAILED A SECURITY CHECK' })),
  line.skewed ? h('p', { className: 'msg-flag msg-flag-warn', text: `⚠ Written ${isRepresentableTime(line.sentTs) ? `${new Date(line.sentTs).toISOString().slice(0, 16).replace('T', ' ')} UTC` : 'at an impossible time'} by the sender's clock, far from when it arrived: an old message replayed, or a wrong clock.` }) : null,
  line.missing > 0 ? h('p', { className: 'msg-flag msg-flag-warn', text: `⚠ ${line.missing} earlier message${line.missing === 1 ? '' : 's'} from them missing` }) : null,
  ...line.problems.map((p) => h('p', { className: 'msg-flag', text: `⚠ ${GROUP_PROBLEM_TEXT[p] || p}` })),
  ...line.notes.map(() => h('p', { className: 'msg-flag msg-flag-warn small', text: 'It also went to a key you cannot name: a member whose key you lack, or someone else.' })),
  h('p', { className: 'msg-text' }, linkifiedText(line.text)));
  toggleClass(element, 'msg-verified', line.verified);
  return element;
}
