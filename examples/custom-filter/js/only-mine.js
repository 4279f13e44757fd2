// The JavaScript twin of ../src/lib.rs: each subscriber sees only events
// whose JSON data has "owner" equal to its user id, or "public": true (a plain
// substring check on the data text, as in the Rust filter).
import { filter } from '@spout/sdk';

export default filter({
  name: 'only-mine',
  version: '0.1.0',
  keep(sub, event) {
    const text = event.data;
    return text.includes(`"owner":"${sub.user}"`) || text.includes('"public":true');
  },
});
