// How a friend's name is drawn (names.js decides which name). A nickname is the user's own word and looks
// plain; the name on a key is marked "~" and said to be chosen by its owner; the ID stays beside any name,
// since a key's owner can pick a name that reads like someone else's. Names are text nodes only.
import { h } from './dom.js';

/** A friend's name with their ID: `label` from names.js friendLabel, `clashes` from nameClashes. */
export function friendNameElement(label, id, clashes = []) {
  const parts = [];
  if (label.kind === 'nickname') {
    parts.push(h('span', { className: 'friend-name', 'data-name-kind': 'nickname', text: label.text }));
  } else if (label.kind === 'key') {
    parts.push(h('span', { className: 'friend-name name-from-key', 'data-name-kind': 'key', title: 'The name on their key, chosen by its owner' },
      h('span', { className: 'name-mark', 'aria-hidden': 'true', text: '~' }),
      label.text,
      h('span', { className: 'sr-only', text: ' (name on their key, chosen by its owner)' })));
  }
  parts.push(h('span', { className: label.kind === 'id' ? 'friend-id' : 'friend-id friend-id-secondary', text: id }));
  if (clashes.length > 0) {
    parts.push(h('span', { className: 'name-clash', 'data-name-clash': clashes.join(' '), text: `⚠ same name as ${clashes.join(', ')}` }));
  }
  return h('span', { className: 'friend-label' }, parts);
}
