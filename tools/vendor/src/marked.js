export { marked, Marked } from "marked";
