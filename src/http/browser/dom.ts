/**
 * The DOM's types for the browser code in this folder, without loading the DOM
 * library anywhere else.
 *
 * This folder is a workspace member whose type check loads the DOM library
 * (./deno.jsonc). There {@link Browser} is the real `typeof globalThis` and each
 * alias below is the DOM's own type, so `deno check` checks the client against
 * the real DOM. The server and the tests import the client too (to inline it in
 * the page), and their programs must not load the DOM library: it would leak
 * `document` and friends into the server's types and clash with Deno's own
 * stream types. In those programs the same aliases are `any`; they add no
 * checking there, and take none away from the check here.
 */
type Global = typeof globalThis;

/** The browser's global object (the DOM's `Window`) where the DOM library is loaded, else `any`. */
// deno-lint-ignore no-explicit-any
export type Browser = Global extends { document: unknown } ? Global : any;

/** The DOM's `Node`. */
export type Node = InstanceType<Browser["Node"]>;
/** The DOM's `Element`. */
export type Element = InstanceType<Browser["Element"]>;
/** The DOM's `HTMLElement`. */
export type HTMLElement = InstanceType<Browser["HTMLElement"]>;
/** The DOM's `SVGElement`. */
export type SVGElement = InstanceType<Browser["SVGElement"]>;
/** The DOM's `HTMLInputElement`. */
export type HTMLInputElement = InstanceType<Browser["HTMLInputElement"]>;
/** The DOM's `HTMLDetailsElement`. */
export type HTMLDetailsElement = InstanceType<Browser["HTMLDetailsElement"]>;
