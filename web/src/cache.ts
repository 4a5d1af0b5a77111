// The model cache in IndexedDB. A model is keyed by the SHA-256 of its manifest; its shards are stored as
// records of CHUNK bytes (the unit of progress and of resuming), its small files whole.
//   models: key → { key, url, manifest (bytes), done: boolean[] (per shard), bytes, added }
//   chunks: [key, shard, index] → ArrayBuffer
//   files:  [key, name] → ArrayBuffer
//   urls:   manifest URL → key (so that an offline reload finds the model without the network)

export const CHUNK = 1 << 20;

export interface ModelRecord {
  key: string;
  url: string;
  manifest: ArrayBuffer;
  done: boolean[];
  bytes: number;
  added: number;
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = (ev) => reject(tx.error ?? (ev.target as IDBRequest).error ?? new Error("IndexedDB request failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

export class Cache {
  private constructor(private db: IDBDatabase) {}

  static async open(name = "varco-web"): Promise<Cache> {
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore("models", { keyPath: "key" });
      db.createObjectStore("chunks");
      db.createObjectStore("files");
      db.createObjectStore("urls");
    };
    return new Cache(await req(open));
  }

  async model(key: string): Promise<ModelRecord | undefined> {
    return req(this.db.transaction("models").objectStore("models").get(key));
  }

  async keyForUrl(url: string): Promise<string | undefined> {
    return req(this.db.transaction("urls").objectStore("urls").get(url));
  }

  async putModel(m: ModelRecord): Promise<void> {
    const tx = this.db.transaction(["models", "urls"], "readwrite");
    tx.objectStore("models").put(m);
    tx.objectStore("urls").put(m.key, m.url);
    await done(tx);
  }

  async putChunk(key: string, shard: number, index: number, data: ArrayBuffer): Promise<void> {
    const tx = this.db.transaction("chunks", "readwrite");
    tx.objectStore("chunks").put(data, [key, shard, index]);
    await done(tx);
  }

  /** The stored chunks of a shard, in order, as far as they are contiguous from the start. */
  async chunkCount(key: string, shard: number): Promise<number> {
    const range = IDBKeyRange.bound([key, shard, 0], [key, shard, Number.MAX_SAFE_INTEGER]);
    return req(this.db.transaction("chunks").objectStore("chunks").count(range));
  }

  async chunk(key: string, shard: number, index: number): Promise<ArrayBuffer> {
    const c = await req(this.db.transaction("chunks").objectStore("chunks").get([key, shard, index]));
    if (!c) throw new Error(`chunk ${index} of shard ${shard} is missing from the cache`);
    return c as ArrayBuffer;
  }

  async deleteShard(key: string, shard: number): Promise<void> {
    const tx = this.db.transaction("chunks", "readwrite");
    tx.objectStore("chunks").delete(IDBKeyRange.bound([key, shard, 0], [key, shard, Number.MAX_SAFE_INTEGER]));
    await done(tx);
  }

  async putFile(key: string, name: string, data: ArrayBuffer): Promise<void> {
    const tx = this.db.transaction("files", "readwrite");
    tx.objectStore("files").put(data, [key, name]);
    await done(tx);
  }

  async file(key: string, name: string): Promise<ArrayBuffer | undefined> {
    return req(this.db.transaction("files").objectStore("files").get([key, name]));
  }

  async list(): Promise<ModelRecord[]> {
    return req(this.db.transaction("models").objectStore("models").getAll());
  }

  /** Removes a model and everything stored for it. */
  async delete(key: string): Promise<void> {
    const tx = this.db.transaction(["models", "chunks", "files", "urls"], "readwrite");
    tx.objectStore("models").delete(key);
    tx.objectStore("chunks").delete(IDBKeyRange.bound([key, -Infinity, -Infinity], [key, Infinity, Infinity]));
    tx.objectStore("files").delete(IDBKeyRange.bound([key, ""], [key, "\uffff"]));
    const urls = tx.objectStore("urls");
    const all = await req(urls.getAllKeys());
    for (const u of all) {
      if ((await req(urls.get(u))) === key) urls.delete(u);
    }
    await done(tx);
  }
}
