// The paywall marker for the article editor (django-prose-editor / Tiptap).
//
// Everything after <hr class="paywall"> is for readers with access. The marker is its
// own node so that the editor keeps it when an article is opened again (a plain
// horizontal rule would drop the class), and it has a toolbar button.
import { Node } from "django-prose-editor/editor"

export const Paywall = Node.create({
  name: "paywall",
  group: "block",
  atom: true,
  selectable: true,
  draggable: true,
  // Parse before the built-in horizontal rule, which would take any <hr>.
  priority: 1000,

  parseHTML() {
    return [{ tag: "hr.paywall", priority: 100 }]
  },

  renderHTML() {
    return ["hr", { class: "paywall" }]
  },

  addNodeView() {
    return () => {
      const dom = document.createElement("div")
      dom.className = "paywall-marker"
      dom.contentEditable = "false"
      dom.textContent = "Paywall: readers without access stop here"
      return { dom }
    }
  },

  addCommands() {
    return {
      insertPaywall:
        () =>
        ({ commands }) =>
          commands.insertContent({ type: this.name }),
    }
  },

  addMenuItems({ buttons, menu }) {
    menu.defineItem({
      name: "paywall",
      groups: "nodes",
      command(editor) {
        editor.chain().focus().insertPaywall().run()
      },
      button: buttons.material("lock", "Insert the paywall here"),
      enabled(editor) {
        let present = false
        editor.state.doc.descendants((node) => {
          if (node.type.name === "paywall") present = true
          return !present
        })
        return !present
      },
    })
  },
})
