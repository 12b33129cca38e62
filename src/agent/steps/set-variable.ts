/** Sets a task-sequence variable for the steps after it (`${Name}` may refer to other variables). */
import type { StepModule } from "../engine.ts";

export const setVariable: StepModule = {
  type: "set-variable",
  async run(params: { name: string; value: string }, ctx) {
    ctx.vars.set(params.name, ctx.expand(params.value));
    return { status: "succeeded", message: `${params.name} set` };
  },
};
