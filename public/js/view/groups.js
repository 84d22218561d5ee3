// The side panel's groups: the list of groups (name, how many members, unread) and "New group", a dialog that
// names the group and picks its members among the friends who can be handed it. DOM only.
import { h, setText, toggleClass } from './dom.js';
import { current } from '../grouplist.js';
import { cleanName, friendLabel, labelText } from '../names.js';
import { MAX_GROUPS } from '../rendezvous.js';

/** Friends a group can be handed to: live, key pinned and not an unconfirmed change. */
export function groupCandidates(state) {
  return [...state.friends.values()].filter((f) => f.status === 'friends' && f.publicArmored && f.trust !== 'changed');
}

export function createGroupsPanel({ actions }) {
  const list = h('ul', { className: 'group-list', 'aria-labelledby': 'groups-title' });
  const empty = h('p', { className: 'muted small', text: 'No groups yet.' });
  const newButton = h('button', { type: 'button', className: 'btn btn-small', id: 'new-group', text: 'New group', onClick: () => actions.openNewGroup() });
  const root = h('section', { className: 'panel groups' },
    h('h2', { className: 'panel-title', id: 'groups-title', text: 'Groups' }), empty, list, h('div', { className: 'actions' }, newButton));
  const items = new Map(); // gid -> {element, update}

  function update(state) {
    empty.hidden = state.groups.size > 0;
    for (const [gid, item] of items) {
      if (!state.groups.has(gid)) {
        item.element.remove();
        items.delete(gid);
      }
    }
    for (const group of state.groups.values()) {
      let item = items.get(group.gid);
      if (!item) {
        item = groupItem(group.gid);
        items.set(group.gid, item);
        list.append(item.element);
      }
      item.update(group, group.gid === state.activeGroupId, state.unread.get(`group:${group.gid}`) || 0);
    }
  }

  function groupItem(gid) {
    const name = h('span', { className: 'group-name' });
    const detail = h('span', { className: 'presence-text small' });
    const unread = h('span', { className: 'unread-badge' });
    const button = h('button', { type: 'button', className: 'friend group-item', 'data-group': gid, onClick: () => actions.selectGroup(gid) },
      h('span', { className: 'group-mark', 'aria-hidden': 'true', text: '#' }), name, detail, unread);
    function update(group, active, unreadCount) {
      const version = current(group.list);
      setText(name, cleanName(version.name, 40));
      const status = group.status === 'member' ? `${version.members.length} members` : group.status === 'left' ? 'you left' : 'you were removed';
      setText(detail, ` ${status}${group.alerts.length ? ' · needs attention' : ''}`);
      if (unread.firstChild?.nodeValue !== String(unreadCount)) unread.replaceChildren(String(unreadCount), h('span', { className: 'sr-only', text: ' unread' }));
      unread.hidden = unreadCount === 0;
      toggleClass(button, 'active', active);
      if (active) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
      button.dataset.status = group.status;
      button.dataset.alerts = String(group.alerts.length);
    }
    return { element: h('li', {}, button), update };
  }

  return { root, update };
}

/**
 * The "New group" dialog. Resolves when it is closed; `create({name, memberIds})` runs on submit and its error
 * is shown in the dialog.
 */
export function newGroupDialog(state, create) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { className: 'dialog new-group', 'aria-labelledby': 'new-group-title' });
    const finish = () => {
      dialog.close();
      dialog.remove();
      resolve();
    };
    const nameInput = h('input', { type: 'text', id: 'new-group-name', className: 'input', maxlength: '64', autocomplete: 'off', required: true });
    const error = h('p', { className: 'form-error small', role: 'alert', id: 'new-group-error' });
    const candidates = groupCandidates(state);
    const boxes = candidates.map((f) => {
      const id = `new-group-member-${f.id}`;
      const box = h('input', { type: 'checkbox', className: 'checkbox', id, value: f.id, 'data-member': f.id });
      return { box, row: h('div', { className: 'check-row' }, box, h('label', { htmlFor: id, text: `${labelText(friendLabel(f))}${f.trust === 'verified' ? ' (verified)' : ''}` })) };
    });
    const create_ = h('button', { type: 'submit', className: 'btn btn-primary', id: 'new-group-create', text: 'Create group' });
    const cancel = h('button', { type: 'button', className: 'btn', text: 'Cancel', onClick: finish });
    const form = h('form', { className: 'new-group-form' },
      h('label', { htmlFor: 'new-group-name', className: 'label', text: 'Group name' }), nameInput,
      h('fieldset', { className: 'new-group-members' },
        h('legend', { className: 'label', text: 'Members' }),
        candidates.length ? boxes.map((b) => b.row) : h('p', { className: 'muted small', text: 'No friends to add yet: befriend someone first.' })),
      h('p', { className: 'small muted', text: `Members get the group through their contact with you. You can be in up to ${MAX_GROUPS} groups of up to 64 members.` }),
      error,
      h('div', { className: 'dialog-actions' }, cancel, create_));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      create_.disabled = true;
      setText(error, '');
      try {
        await create({ name: nameInput.value, memberIds: boxes.filter((b) => b.box.checked).map((b) => b.box.value) });
        finish();
      } catch (e) {
        setText(error, e.message);
      } finally {
        create_.disabled = false;
      }
    });
    dialog.append(h('h2', { id: 'new-group-title', className: 'dialog-title', text: 'New group' }), form);
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      finish();
    });
    document.body.append(dialog);
    dialog.showModal();
    nameInput.focus();
  });
}
