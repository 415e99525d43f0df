/** What a user's options hold once the keys set to `undefined` are dropped. */
export type Defined<T> = { [K in keyof T]?: Exclude<T[K], undefined> };

/**
 * `options` without the keys set to `undefined`, so that `{ ...defaults, ...definedOptions(o) }`
 * keeps a default where the user wrote `{ key: undefined }` (allowed by every options type, for
 * callers under `exactOptionalPropertyTypes`), as it does where the key is left out.
 */
export function definedOptions<T extends object>(options: T): Defined<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Defined<T>;
}
