-- An order and its event, committed together: the event exists if and only if the order does.
BEGIN;
WITH o AS (INSERT INTO orders (customer, total) VALUES ('ada', 42.50) RETURNING id, customer, total)
INSERT INTO spout_outbox (payload)
SELECT jsonb_build_object('topic', 'orders/' || o.id, 'type', 'order.created',
                          'data', jsonb_build_object('id', o.id, 'customer', o.customer, 'total', o.total))
FROM o;
COMMIT;
