import DOMPurify from "dompurify";
export default DOMPurify;
export { DOMPurify };
