// Entry point. OpenPGP.js throws while loading when the Web Crypto API is missing (any page that is not
// https:// or http://localhost), so check first and explain instead of leaving a blank page.
const secure = globalThis.isSecureContext !== false && Boolean(globalThis.crypto && globalThis.crypto.subtle);

if (secure) {
  await import('./app.js');
} else {
  const { showInsecureContext } = await import('./view/insecure.js');
  showInsecureContext(document.getElementById('app'));
}
