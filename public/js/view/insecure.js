// Shown instead of the app when the page is not a secure context: without Web Crypto nothing can be
// encrypted, and the user should learn why and what to do rather than meet a broken page.
import { h } from './dom.js';

export function showInsecureContext(root) {
  document.body.className = 'screen-keys';
  root.replaceChildren(h('section', { className: 'key-screen', 'aria-labelledby': 'insecure-title' },
    h('header', { className: 'key-hero' },
      h('p', { className: 'hero-title', 'aria-hidden': 'true' }, h('span', { className: 'prompt', text: '> ' }), 'secchat'),
      h('h1', { id: 'insecure-title', className: 'hero-tagline', text: 'Encryption is unavailable on this page' })),
    h('div', { className: 'banner banner-danger', role: 'alert', id: 'insecure-context' },
      h('strong', { text: 'This page is not a secure context, so the browser hides its Web Crypto API.' }),
      h('p', { text: 'SecChat encrypts everything in your browser and cannot work without it. Browsers only offer it on https:// pages and on http://localhost.' }),
      h('p', { text: `You opened ${location.origin}. Use the https:// address of this server (start it with --tls-cert/--tls-key, --tls-self-signed DIR on a home network, or put a TLS reverse proxy in front), or open it on the same machine as http://localhost.` }))));
}
