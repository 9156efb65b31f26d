// Reference SMS lengths for crates/cohort-journey/src/sms.rs, from Twilio's open-source
// calculator. Not part of CI: the Rust test keeps the printed table as fixed values.
//
//   npm install --no-save sms-segments-calculator@1.3.0 && node sms_segments.mjs
//
// Each case is a list of [piece, repeat] so the Rust test rebuilds the same text. Printed per
// case: the encoding, the segment count, and each segment's size in septets (GSM-7) or UTF-16
// code units (UCS-2), user data header excluded.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { SegmentedMessage } = require('sms-segments-calculator');
const { version } = require('sms-segments-calculator/package.json');

const gsmBasic =
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
const cases = [
  [['', 1]],
  [['Hello', 1]],
  [[gsmBasic, 1]],
  [['^{}[]~\\|€\f', 1]],
  [['x', 160]], [['x', 161]], [['x', 306]], [['x', 307]],
  [['x', 459]], [['x', 460]], [['x', 612]], [['x', 613]],
  [['{', 80]], [['{', 80], ['x', 1]], [['€', 76], ['x', 7]], [['\f', 81]],
  [['x', 152], ['}', 1], ['x', 152]],
  [['x', 152], ['}', 1], ['x', 151]],
  [['x', 159], ['€', 1]],
  [['x', 305], ['|', 1]],
  [['`', 1]], [['ç', 1]], [['á', 1]], [['’', 1]], [['…', 1]], [['•', 1]], [['°', 1]], [['¢', 1]],
  [['您好', 1]],
  [['中', 70]], [['中', 71]], [['中', 134]], [['中', 135]],
  [['中', 201]], [['中', 202]], [['中', 268]], [['中', 269]],
  [['【Cohort】张先生，您的优惠码 SPRING-8 即将过期，回复TD退订', 1]],
  [['中', 1], ['{', 69]], [['中', 1], ['{', 70]],
  [['👍', 1]], [['😀', 35]], [['😀', 36]],
  [['x', 68], ['👍', 1]], [['x', 69], ['👍', 1]],
  [['x', 66], ['👍', 1], ['x', 66]],
  [['x', 66], ['👍', 1], ['x', 67]],
  [['x', 63], ['👨‍👩‍👧', 1], ['x', 60]],
  [['x', 64], ['🇨🇳', 1], ['x', 63]],
  [['x', 65], ['👍🏽', 1], ['x', 64]],
  [['a\r\nb', 1]],
  [['e\u0301', 1]],
  [['亲爱的会员', 1], ['x', 60], ['👍', 1]],
];

const literal = (s) =>
  [...s]
    .map((c) => {
      const cp = c.codePointAt(0);
      if (c === '"') return '\\"';
      if (c === '\\') return '\\\\';
      const invisible = cp < 0x20 || (cp >= 0x300 && cp < 0x370) || cp === 0x200d || (cp >= 0x1f3fb && cp <= 0x1f3ff);
      return invisible ? `\\u{${cp.toString(16)}}` : c;
    })
    .join('');

console.log(`// sms-segments-calculator ${version}, new SegmentedMessage(text, "auto")`);
for (const pieces of cases) {
  const text = pieces.map(([p, n]) => p.repeat(n)).join('');
  const m = new SegmentedMessage(text, 'auto');
  const gsm = m.encodingName === 'GSM-7';
  const sizes = m.segments.map((s) => s.messageSizeInBits() / (gsm ? 7 : 16));
  const spec = pieces.map(([p, n]) => `("${literal(p)}", ${n})`).join(', ');
  console.log(`    (&[${spec}], ${gsm ? 'Gsm7' : 'Ucs2'}, ${m.segmentsCount}, &[${sizes.join(', ')}]),`);
}
