// The streamgate browser and Node client (issue "The browser client"). Placeholder until the
// module lands: the gateway embeds this file and serves it at GET /client/streamgate.js.
export {};
