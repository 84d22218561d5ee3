// The key setup screen: unlock a remembered key, generate a new pair, or import one (paste or file).
import { copyButton, fingerprintElement, h } from './dom.js';

const KEY_FILE_TYPES = '.asc,.gpg,.pgp,.key,.txt,text/plain,application/pgp-keys';

/**
 * @param {object} actions
 *   generate({name, passphrase, remember}) → Promise<identity>
 *   importKeys({privateSource, publicSource, passphrase, remember}) → Promise<identity>
 *   unlockSaved({passphrase}) → Promise<identity>
 *   forgetSaved() → void
 *   enter(identity) → void  (go to the chat screen)
 */
export function createKeyScreen({ actions, remembered, invite }) {
  const root = h('section', { className: 'key-screen', 'aria-labelledby': 'key-screen-title' });
  const errorBox = h('p', { className: 'form-error', role: 'alert', id: 'key-error' });

  root.append(
    h('header', { className: 'key-hero' },
      h('h1', { id: 'key-screen-title', className: 'hero-title' },
        h('span', { className: 'prompt', 'aria-hidden': 'true', text: '> ' }), 'secchat', h('span', { className: 'cursor', 'aria-hidden': 'true', text: '_' })),
      h('p', { className: 'hero-tagline', text: 'End-to-end encrypted chat. Your keys stay in this browser; the server only routes ciphertext.' })),
  );

  // Someone's invite link brought the user here: say so before anything else, and what comes next.
  if (invite) {
    root.append(h('section', { className: 'banner banner-info invite-banner', 'aria-labelledby': 'invite-banner-title' },
      h('h2', { className: 'invite-banner-title', id: 'invite-banner-title' }, 'You were invited to chat by ', h('span', { className: 'friend-id', text: invite.id })),
      h('p', { text: `First make a key (or unlock yours): it stays in this browser and encrypts everything. Then you will be asked to send ${invite.id} a friend request.` })));
  }

  function setError(message) {
    errorBox.textContent = message || '';
  }

  /** Runs an action with the button showing progress; the key work can take seconds on a phone. */
  async function busy(button, label, work) {
    const original = button.textContent;
    button.disabled = true;
    button.textContent = label;
    root.setAttribute('aria-busy', 'true');
    setError('');
    // Let the "working" state paint before OpenPGP.js holds the main thread.
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    try {
      return await work();
    } catch (error) {
      setError(error && error.message ? error.message : String(error));
      return null;
    } finally {
      button.disabled = false;
      button.textContent = original;
      root.removeAttribute('aria-busy');
    }
  }

  if (remembered) root.append(savedKeyPanel());

  const generatePanel = createGeneratePanel();
  const importPanel = createImportPanel();
  const tabGenerate = h('button', { type: 'button', role: 'tab', id: 'tab-generate', className: 'tab', 'aria-controls': 'panel-generate', text: 'Generate new key' });
  const tabImport = h('button', { type: 'button', role: 'tab', id: 'tab-import', className: 'tab', 'aria-controls': 'panel-import', text: 'Import existing key' });
  const tabs = [[tabGenerate, generatePanel], [tabImport, importPanel]];
  function select(index) {
    tabs.forEach(([tab, panel], i) => {
      tab.setAttribute('aria-selected', String(i === index));
      // Both tabs are Tab stops (not only the selected one): people who do not know the arrow-key convention
      // of tab lists must still find "Import existing key".
      tab.tabIndex = 0;
      panel.hidden = i !== index;
    });
    setError('');
  }
  tabs.forEach(([tab], i) => {
    tab.addEventListener('click', () => select(i));
    tab.addEventListener('keydown', (event) => {
      if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return;
      const next = (i + (event.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length;
      select(next);
      tabs[next][0].focus();
    });
  });
  select(0);

  root.append(
    h('div', { className: 'card key-card' },
      h('div', { className: 'tabs', role: 'tablist', 'aria-label': 'Key setup' }, tabGenerate, tabImport),
      generatePanel,
      importPanel,
      errorBox),
  );

  function savedKeyPanel() {
    const passphrase = h('input', { type: 'password', id: 'saved-passphrase', autocomplete: 'current-password', className: 'input', required: true });
    const unlock = h('button', { type: 'submit', className: 'btn btn-primary', id: 'unlock-saved', text: 'Unlock' });
    const form = h('form', { className: 'card saved-key', id: 'saved-key-form', 'aria-labelledby': 'saved-key-title' },
      h('h2', { id: 'saved-key-title', className: 'card-title', text: 'Saved key on this device' }),
      h('p', { className: 'muted', text: remembered.userId || '' }),
      fingerprintElement(remembered.fingerprint),
      h('label', { htmlFor: 'saved-passphrase', className: 'label', text: 'Passphrase' }),
      passphrase,
      h('div', { className: 'actions' },
        unlock,
        h('button', {
          type: 'button', className: 'btn btn-danger', text: 'Forget saved key',
          onClick: () => {
            actions.forgetSaved();
            form.remove();
          },
        })));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const identity = await busy(unlock, 'unlocking…', () => actions.unlockSaved({ passphrase: passphrase.value }));
      if (identity) actions.enter(identity);
    });
    return form;
  }

  function rememberBox(id) {
    const box = h('input', { type: 'checkbox', id, className: 'checkbox' });
    const row = h('div', { className: 'check-row' },
      box,
      h('label', { htmlFor: id, text: 'Remember on this device (stores only the passphrase-protected key)' }));
    return { box, row };
  }

  function createGeneratePanel() {
    const name = h('input', { type: 'text', id: 'gen-name', className: 'input', autocomplete: 'nickname', maxlength: '64', placeholder: 'optional' });
    const pass = h('input', { type: 'password', id: 'gen-passphrase', className: 'input', autocomplete: 'new-password', required: true });
    const pass2 = h('input', { type: 'password', id: 'gen-passphrase2', className: 'input', autocomplete: 'new-password', required: true });
    const remember = rememberBox('gen-remember');
    const submit = h('button', { type: 'submit', className: 'btn btn-primary', id: 'generate', text: 'Generate key pair' });
    const result = h('div', { className: 'key-result', hidden: true });
    const form = h('form', { className: 'stack', 'aria-label': 'Generate a new key pair' },
      h('label', { htmlFor: 'gen-name', className: 'label', text: 'Name on the key' }), name,
      h('label', { htmlFor: 'gen-passphrase', className: 'label', text: 'Passphrase (at least 8 characters)' }), pass,
      h('label', { htmlFor: 'gen-passphrase2', className: 'label', text: 'Repeat passphrase' }), pass2,
      remember.row,
      h('div', { className: 'actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (pass.value.length < 8) {
        setError('Choose a passphrase of at least 8 characters: it protects your private key.');
        pass.focus();
        return;
      }
      if (pass.value !== pass2.value) {
        setError('The two passphrases differ.');
        pass2.focus();
        return;
      }
      const identity = await busy(submit, 'generating…', () => actions.generate({ name: name.value, passphrase: pass.value, remember: remember.box.checked }));
      if (!identity) return;
      pass.value = '';
      pass2.value = '';
      form.hidden = true;
      showResult(identity);
    });

    function showResult(identity) {
      const enter = h('button', { type: 'button', className: 'btn btn-primary', id: 'enter-chat', text: 'Continue to chat', onClick: () => actions.enter(identity) });
      const fp = fingerprintElement(identity.fingerprint, 'fingerprint fingerprint-large');
      result.replaceChildren(
        h('h2', { className: 'card-title', text: 'Your key is ready' }),
        h('p', { className: 'label', text: 'Your fingerprint' }),
        h('div', { className: 'fp-line' }, fp, copyButton('Copy your fingerprint', () => identity.fingerprint, () => fp)),
        h('p', { className: 'muted', text: 'Download both files to use this key again (for example in GnuPG). The private key file stays protected by your passphrase.' }),
        h('div', { className: 'actions' },
          downloadButton('Download public key', 'secchat-public.asc', identity.publicArmored),
          identity.protectedArmored ? downloadButton('Download private key', 'secchat-private.asc', identity.protectedArmored) : null,
          enter),
      );
      result.hidden = false;
      enter.focus();
    }

    return h('div', { role: 'tabpanel', id: 'panel-generate', 'aria-labelledby': 'tab-generate', className: 'tab-panel' }, form, result);
  }

  function createImportPanel() {
    const privateInput = keyInput('import-private', 'Private key', 'Paste "-----BEGIN PGP PRIVATE KEY BLOCK-----…" or choose the file');
    const publicInput = keyInput('import-public', 'Public key (optional: derived from the private key)', 'Paste "-----BEGIN PGP PUBLIC KEY BLOCK-----…" or choose the file');
    const pass = h('input', { type: 'password', id: 'import-passphrase', className: 'input', autocomplete: 'current-password' });
    const remember = rememberBox('import-remember');
    const submit = h('button', { type: 'submit', className: 'btn btn-primary', id: 'import', text: 'Unlock and use this key' });
    const form = h('form', { className: 'stack', 'aria-label': 'Import an existing key pair' },
      privateInput.block,
      publicInput.block,
      h('label', { htmlFor: 'import-passphrase', className: 'label', text: 'Passphrase of the private key' }), pass,
      remember.row,
      h('div', { className: 'actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const identity = await busy(submit, 'checking…', () => actions.importKeys({
        privateSource: privateInput.source(),
        publicSource: publicInput.source(),
        passphrase: pass.value,
        remember: remember.box.checked,
      }));
      if (!identity) return;
      pass.value = '';
      actions.enter(identity);
    });
    return h('div', { role: 'tabpanel', id: 'panel-import', 'aria-labelledby': 'tab-import', className: 'tab-panel' }, form);
  }

  /** A textarea plus a file picker; a binary (non-armored) key file is kept as bytes. */
  function keyInput(id, labelText, placeholder) {
    let binary = null;
    const note = h('p', { className: 'muted small', 'aria-live': 'polite' });
    const area = h('textarea', { id, className: 'input key-area', rows: '5', spellcheck: 'false', autocomplete: 'off', placeholder });
    area.addEventListener('input', () => {
      binary = null;
      note.textContent = '';
    });
    const file = h('input', { type: 'file', id: `${id}-file`, className: 'file-input', accept: KEY_FILE_TYPES });
    file.addEventListener('change', async () => {
      const chosen = file.files && file.files[0];
      if (!chosen) return;
      const bytes = new Uint8Array(await chosen.arrayBuffer());
      const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
      if (text.trimStart().startsWith('-----BEGIN PGP')) {
        area.value = text;
        binary = null;
        note.textContent = `Loaded ${chosen.name}.`;
      } else {
        area.value = '';
        binary = bytes;
        note.textContent = `Loaded binary key file ${chosen.name} (${bytes.length} bytes).`;
      }
    });
    const block = h('div', { className: 'stack' },
      h('label', { htmlFor: id, className: 'label', text: labelText }),
      area,
      h('div', { className: 'file-row' },
        h('label', { htmlFor: `${id}-file`, className: 'label small', text: 'or load a file:' }),
        file),
      note);
    return { block, source: () => (area.value.trim() ? area.value : binary || '') };
  }

  return { root, setError };
}

function downloadButton(label, filename, text) {
  return h('button', {
    type: 'button', className: 'btn', text: label,
    onClick: () => {
      const url = URL.createObjectURL(new Blob([text], { type: 'application/pgp-keys' }));
      const link = h('a', { href: url, download: filename });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    },
  });
}
