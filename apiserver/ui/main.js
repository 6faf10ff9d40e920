// The dashboard's entry point (a file of its own: the page's Content-Security-Policy allows no inline script).
import { start } from "./app.js";

start();
