import { useMutation, useQuery } from "convex/react";
import { ConvexError } from "convex/values";
import { useState } from "react";
import { api } from "../convex/_generated/api";

/** `?user=alice` picks the shopper; without it each tab is a new anonymous one. */
const user =
  new URLSearchParams(window.location.search).get("user") ??
  `guest-${Math.random().toString(36).slice(2, 8)}`;

function errorText(e: unknown): string {
  if (e instanceof ConvexError) {
    return typeof e.data === "string" ? e.data : JSON.stringify(e.data);
  }
  return e instanceof Error ? e.message : String(e);
}

export function App() {
  const items = useQuery(api.items.getItems);
  const cart = useQuery(api.items.getCart, { user });
  const addCart = useMutation(api.items.addCart);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);

  const add = async (id: (typeof api.items.addCart)["_args"]["item"], name: string) => {
    setError(null);
    setStatus(null);
    try {
      await addCart({ user, item: id });
      setStatus(`Added ${name} to your cart`);
    } catch (e) {
      setError(errorText(e));
    }
  };

  return (
    <main>
      <h1>Swaghaus</h1>
      <p>
        Shopping as <strong data-testid="user">{user}</strong>
      </p>
      {error !== null && (
        <p role="alert" data-testid="error">
          {error}
        </p>
      )}
      {status !== null && <p data-testid="status">{status}</p>}
      {items === undefined ? (
        <p>Loading…</p>
      ) : (
        <ul>
          {items.map((item) => (
            <li key={item._id} data-testid={`item-${item.name}`}>
              {item.name} ${item.price.toFixed(2)}{" "}
              <span data-testid={`remaining-${item.name}`}>{item.remaining} left</span>{" "}
              <button
                type="button"
                data-testid={`add-${item.name}`}
                onClick={() => void add(item._id, item.name)}
              >
                Add to cart
              </button>
            </li>
          ))}
        </ul>
      )}
      <h2>Your cart</h2>
      {cart === undefined || cart.length === 0 ? (
        <p>Empty</p>
      ) : (
        <ul>
          {cart.map((line) => (
            <li key={line.item} data-testid={`cart-${line.name}`}>
              {line.name} × {line.count}
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}
