// Small DOM helpers. Every string goes in through textContent or setAttribute; no HTML parsing anywhere.

/**
 * h('button', {className: 'x', type: 'button', onClick: fn, 'aria-label': '...'}, 'text', childNode)
 * Props starting with "on" attach listeners; `className`, `text`, `hidden`, `disabled`, `value`,
 * `checked` are set as properties; everything else with setAttribute.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) {
      // Only real listeners: a string handler would be inline script (and is blocked by the CSP anyway).
      if (typeof value !== 'function') throw new TypeError(`h(): ${name} must be a function`);
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === 'style' || name === 'innerHTML') {
      throw new TypeError(`h(): ${name} is not allowed; use classes and text`);
    } else if (name === 'className') {
      element.className = value;
    } else if (name === 'text') {
      element.textContent = value;
    } else if (['hidden', 'disabled', 'value', 'checked', 'htmlFor', 'readOnly', 'required', 'multiple'].includes(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * The nodes among `items` (nested arrays flattened), without null, undefined or false: for replaceChildren()
 * and append(), which would print those as the text "null", "undefined" or "false".
 */
export function nodes(...items) {
  return items.flat(Infinity).filter((item) => item !== null && item !== undefined && item !== false);
}

/** Sets an element's text only when it differs, so screen readers are not told about non-changes. */
export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

export function toggleClass(element, name, on) {
  element.classList.toggle(name, Boolean(on));
}

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING_PUNCTUATION = /[.,;:!?)\]}]+$/;

/**
 * Text with http(s) links as <a> elements built here (never parsed from the text). Everything else stays
 * text nodes, so markup in a message shows as the characters it is made of.
 */
export function linkifiedText(text) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    let url = match[0];
    const trailing = url.match(TRAILING_PUNCTUATION);
    if (trailing) url = url.slice(0, -trailing[0].length);
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      continue;
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') continue;
    fragment.append(document.createTextNode(text.slice(last, match.index)));
    fragment.append(h('a', { href: parsed.href, target: '_blank', rel: 'noopener noreferrer', text: url }));
    last = match.index + url.length;
  }
  fragment.append(document.createTextNode(text.slice(last)));
  return fragment;
}

/** Copies text; falls back to selecting it in `fallbackTarget` when the Clipboard API is refused. */
export async function copyText(text, fallbackTarget) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackTarget) {
      const range = document.createRange();
      range.selectNodeContents(fallbackTarget);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    return false;
  }
}

/** A copy button that says "copied" for a moment. */
export function copyButton(label, getText, getFallbackTarget) {
  const button = h('button', { type: 'button', className: 'btn btn-small', 'aria-label': label, text: 'copy' });
  button.addEventListener('click', async () => {
    const ok = await copyText(getText(), getFallbackTarget ? getFallbackTarget() : null);
    button.textContent = ok ? 'copied' : 'press Ctrl+C';
    setTimeout(() => { button.textContent = 'copy'; }, 1600);
  });
  return button;
}

/** A composer: `send` on submit and on Enter; Shift+Enter (and Enter while an IME composes) makes a new line. */
export function sendOnEnter(form, textarea, send) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  textarea.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
}

export function formatTime(ms) {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return '--:--';
  const pad = (n) => String(n).padStart(2, '0');
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  // HH:MM alone would make a replayed message from another day look like one from today.
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

/**
 * A <time> for a timestamp that may come from the network: an invalid one must not throw (toISOString
 * does), or the message's row and every pane rendered after it would stay empty.
 */
export function timeElement(ms, className = 'msg-time') {
  const date = new Date(ms);
  const valid = !Number.isNaN(date.getTime());
  return h('time', { className, dateTime: valid ? date.toISOString() : null, text: formatTime(ms) });
}

/** Fingerprint as 10 groups of 4 hex in a <code>, split in two rows of 5 for easy comparison. */
export function fingerprintElement(fingerprint, className = 'fingerprint') {
  const groups = fingerprint.match(/.{1,4}/g) || [];
  return h('code', { className, 'data-fingerprint': fingerprint },
    h('span', { className: 'fp-row' }, groups.slice(0, 5).join(' ')),
    ' ',
    h('span', { className: 'fp-row' }, groups.slice(5).join(' ')));
}

/** Asks a yes/no question in an accessible modal <dialog>; resolves true on confirm. */
export function confirmDialog({ title, body, confirmText, danger = false }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { className: 'dialog', 'aria-labelledby': 'dialog-title' });
    const finish = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    const cancel = h('button', { type: 'button', className: 'btn', text: 'Cancel', onClick: () => finish(false) });
    const confirm = h('button', {
      type: 'button', className: danger ? 'btn btn-danger' : 'btn btn-primary', text: confirmText, onClick: () => finish(true),
    });
    dialog.append(
      h('h2', { id: 'dialog-title', className: 'dialog-title', text: title }),
      ...[].concat(body).map((part) => (part instanceof Node ? part : h('p', { text: part }))),
      h('div', { className: 'dialog-actions' }, cancel, confirm),
    );
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
