// A QR code drawn in the page (qrcode-generator, vendored; no third-party service ever sees the link) onto a
// <canvas>: plain pixels, so nothing in the link can become markup.
import qrcode from '../../vendor/qrcode-generator.mjs';

const MODULE_PX = 4; // a phone camera reads 4 px modules from a screen at arm's length
const QUIET_ZONE = 4; // modules of white around the code, as the QR standard asks

/** A canvas showing `text` as a QR code (error correction M), with `label` as its accessible name. */
export function qrCanvas(text, label) {
  const code = qrcode(0, 'M'); // 0: the smallest version that fits
  code.addData(text, 'Byte');
  code.make();
  const modules = code.getModuleCount();
  const size = (modules + 2 * QUIET_ZONE) * MODULE_PX;
  const canvas = document.createElement('canvas');
  canvas.width = size;
  canvas.height = size;
  canvas.className = 'qr-code';
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', label);
  canvas.dataset.text = text;
  const context = canvas.getContext('2d');
  context.fillStyle = '#ffffff';
  context.fillRect(0, 0, size, size);
  context.fillStyle = '#000000';
  for (let row = 0; row < modules; row += 1) {
    for (let col = 0; col < modules; col += 1) {
      if (code.isDark(row, col)) context.fillRect((col + QUIET_ZONE) * MODULE_PX, (row + QUIET_ZONE) * MODULE_PX, MODULE_PX, MODULE_PX);
    }
  }
  return canvas;
}
