/**
 * The last-hat store on PostgreSQL, as a Node app would write it by hand:
 * the Swaghaus tables, and `addCart` as one SERIALIZABLE transaction with the
 * same reads and writes as the Convex mutation (read the item, check and
 * lower its stock, read the user's cart row, insert or bump it), retried on
 * serialization failures and deadlocks.
 */
import type pg from "pg";

export const SCHEMA = `
  CREATE TABLE items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    price double precision NOT NULL,
    remaining double precision NOT NULL
  );
  CREATE INDEX items_remaining ON items (remaining);
  CREATE TABLE carts (
    id bigserial PRIMARY KEY,
    "user" text NOT NULL,
    item integer NOT NULL REFERENCES items (id),
    count double precision NOT NULL,
    UNIQUE ("user", item)
  );
`;

/** Stocks `count` items named from `start`; their ids. */
export async function fillItems(
  c: pg.Client,
  start: number,
  count: number,
  remaining: number,
): Promise<number[]> {
  const r = await c.query<{ id: number }>(
    `INSERT INTO items (name, price, remaining)
       SELECT 'item ' || i, 1 + i % 50, $3 FROM generate_series($1::int, $2::int) AS i
       RETURNING id`,
    [start, start + count - 1, remaining],
  );
  return r.rows.map((row) => row.id);
}

/** A transaction that lost a serialization race: PostgreSQL says to retry it. */
function retryable(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "40001" || code === "40P01";
}

/**
 * Swaghaus `addCart` in one SERIALIZABLE transaction; resolves with the stock
 * left and how many times it was retried.
 */
export async function addCart(
  c: pg.Client,
  user: string,
  item: number,
): Promise<{ remaining: number; retries: number }> {
  for (let retries = 0; ; retries++) {
    try {
      await c.query("BEGIN ISOLATION LEVEL SERIALIZABLE");
      const found = await c.query<{ name: string; remaining: number }>({
        name: "get_item",
        text: "SELECT name, remaining FROM items WHERE id = $1",
        values: [item],
      });
      const doc = found.rows[0];
      if (doc === undefined) throw new Error("no such item");
      if (doc.remaining <= 0) throw new Error(`${doc.name} is out of stock`);
      await c.query({
        name: "set_remaining",
        text: "UPDATE items SET remaining = $2 WHERE id = $1",
        values: [item, doc.remaining - 1],
      });
      const cart = await c.query<{ id: string; count: number }>({
        name: "get_cart",
        text: 'SELECT id, count FROM carts WHERE "user" = $1 AND item = $2',
        values: [user, item],
      });
      const row = cart.rows[0];
      if (row === undefined) {
        await c.query({
          name: "insert_cart",
          text: 'INSERT INTO carts ("user", item, count) VALUES ($1, $2, 1)',
          values: [user, item],
        });
      } else {
        await c.query({
          name: "bump_cart",
          text: "UPDATE carts SET count = $2 WHERE id = $1",
          values: [row.id, row.count + 1],
        });
      }
      await c.query("COMMIT");
      return { remaining: doc.remaining - 1, retries };
    } catch (e) {
      await c.query("ROLLBACK").catch(() => {});
      if (!retryable(e)) throw e;
    }
  }
}

/** What the hand-written realtime stack listens to: a notification per changing statement. */
export const NOTIFY_TRIGGER = `
  CREATE FUNCTION notify_items() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('items_changed', ''); RETURN NULL; END $$;
  CREATE TRIGGER items_changed AFTER INSERT OR UPDATE OR DELETE ON items
    FOR EACH STATEMENT EXECUTE FUNCTION notify_items();
`;
