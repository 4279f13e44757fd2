// The JS filter `spout bench` runs through (docs/PERFORMANCE.md, issue 20):
// keeps every event whose data does not mark it secret, so it reads each
// event's text and keeps all of the bench's payloads.
//   node plugins/sdk-js/build.mjs docs/bench/not-secret.js -o docs/bench/not-secret.wasm
import { filter } from '@spout/sdk';

export default filter({
  name: 'not-secret',
  keep(sub, event) {
    return !event.data.includes('"secret":true');
  },
});
