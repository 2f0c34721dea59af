"""The CRM store: accounts, contacts, leads, deals, activities, orders, tickets, and what models write back."""
